"""Adverse-action notices: what an applicant is told when declined, referred or offered less.

Principal reasons: the decision's own (at most four, in the order `pipeline.principal_reasons`
gives them: the capping rule of a reduced approval, the rules that decided the outcome, the
model's reasons by contribution), each stated in plain language. Two codes that say the same
thing to an applicant are cited once, and the score cut-off itself (PD-01/PD-02: "risk above
appetite") is not a reason an applicant can act on — the model's reasons that follow it in the
decision say what drove the score. The lender's identity and rights paragraphs come from a
per-lender file (notices/lenders.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml

MAX_REASONS = 4
SCORE_RULES = {"PD-01", "PD-02"}  # "risk above appetite": replaced by the model's reasons
_LIMIT = "The amount requested exceeds the limit for your income and risk level"
PLAIN: dict[str, str] = {
    "KO-01": "You do not meet our minimum age requirement to enter into a credit contract",
    "KO-02": "The loan would run past the maximum age at repayment that our policy allows",
    "KO-03": "The amount requested is more than the price of the goods being financed",
    "KO-04": "The repayment term requested is outside the terms we offer (6 to 72 months)",
    "KO-05": "Delinquent past or present credit obligations with others",
    "RF-01": "We could not verify your income",
    "RF-02": "Length of self-employment",
    "RF-03": "Delinquent past or present credit obligations with others",
    "RF-04": "We could not verify your residence",
    "RF-05": "We could not verify your employment",
    "AF-01": "Your expenses and the loan instalment would exceed your income",
    "AF-02": "Excessive obligations in relation to income",
    "AF-03": "Too much existing debt for the amount requested",
    "AF-04": "No down payment, and assets insufficient for the amount requested",
    "MDL-AGE": "Age",
    "MDL-SENIORITY": "Length of employment",
    "MDL-HOME": "Type of residence",
    "MDL-MARITAL": "Household composition",
    "MDL-RECORDS": "Delinquent past or present credit obligations with others",
    "MDL-JOB": "Type of employment",
    "MDL-TERM": "Length of the repayment term requested",
    "MDL-EXPENSES": "Excessive obligations in relation to income",
    "MDL-INCOME": "Income insufficient for the amount of credit requested",
    "MDL-ASSETS": "Limited assets",
    "MDL-DEBT": "Amount of existing debt",
    "MDL-AMOUNT": "Amount of credit requested is high for your income and assets",
    "MDL-PRICE": "Price of the goods financed",
    "LIMIT": _LIMIT,
    # the band limits of rules/risk_appetite.yaml, cited when they reduce an approval
    **{f"TBL-BAND-LIMIT-{band}": _LIMIT for band in "ABCD"},
}
PROTECTED_CODES = {"MDL-MARITAL", "MDL-AGE", "KO-01", "KO-02"}  # need compliance review
ACTIONS = {
    "decline": "Your application for credit has been declined.",
    "refer": "Your application has been referred to an underwriter for review; credit was not "
    "granted automatically.",
    "reduced": "We can offer credit of a lower amount than you requested.",
}


class NoticeReason(msgspec.Struct, frozen=True):
    code: str
    text: str  # plain language
    source: str  # rule | model
    protected_basis: bool = False


class Lender(msgspec.Struct, frozen=True):
    name: str
    address: str
    contact: str
    rights: str
    credit_report: str = ""


class LenderBook(msgspec.Struct, frozen=True):
    default: str
    lenders: dict[str, Lender]

    def get(self, lender_id: str | None) -> Lender:
        key = lender_id or self.default
        if key not in self.lenders:
            raise KeyError(f"unknown lender {key!r} (known: {', '.join(sorted(self.lenders))})")
        return self.lenders[key]


class Notice(msgspec.Struct, frozen=True):
    decision_id: str
    application_id: str
    decided_at: str
    action: str  # decline | refer | reduced
    statement: str
    requested_amount: float | None
    offered_amount: float | None
    reasons: list[NoticeReason]
    lender: Lender
    model_version: str


class NoAdverseAction(Exception):
    """The decision approved the full amount requested: there is nothing to notify."""


def load_lenders(path: Path) -> LenderBook:
    return msgspec.convert(yaml.safe_load(path.read_text()), LenderBook)


def _plain(code: str, fallback: str) -> str:
    return PLAIN.get(code, fallback)


def principal_reasons(decision: dict[str, Any], action: str) -> list[NoticeReason]:
    """The decision's principal reasons in its order, in plain language, none repeated, the
    score cut-off left to the model's reasons (kept when nothing else explains it)."""
    reasons = decision.get("reasons", [])
    actionable = [r for r in reasons if r["code"] not in SCORE_RULES] or reasons
    ordered = [(r["code"], r["source"], _plain(r["code"], r["text"])) for r in actionable]
    if action == "reduced" and not any(r["source"] == "rule" for r in reasons):
        # decided before reduced approvals cited their capping rule
        ordered.insert(0, ("LIMIT", "rule", PLAIN["LIMIT"]))
    out: list[NoticeReason] = []
    seen: set[str] = set()
    for code, source, text in ordered:
        if text in seen:
            continue
        seen.add(text)
        out.append(NoticeReason(code, text, source, code in PROTECTED_CODES))
        if len(out) == MAX_REASONS:
            break
    return out


def build_notice(request: dict[str, Any], decision: dict[str, Any], lender: Lender) -> Notice:
    outcome = decision["outcome"]
    requested = request.get("amount")
    offered = decision.get("approved_amount")
    if outcome == "approve":
        if offered is None or requested is None or offered >= requested:
            raise NoAdverseAction("approved as requested: no adverse action to notify")
        action = "reduced"
    else:
        action = outcome
    return Notice(
        decision_id=decision["decision_id"],
        application_id=decision["application_id"],
        decided_at=decision["decided_at"],
        action=action,
        statement=ACTIONS[action],
        requested_amount=requested,
        offered_amount=offered if action == "reduced" else None,
        reasons=principal_reasons(decision, action),
        lender=lender,
        model_version=decision["trace"]["model"]["version"],
    )
