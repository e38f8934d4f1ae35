"""The textbook baseline: the same decisions, written the way the usual tutorial writes them.

FastAPI with a pydantic request model, a one-row pandas DataFrame per request,
`Booster.predict`, `pred_contrib=True` on the DataFrame when reasons are needed (refer or
decline), the shipped policy (rules/risk_appetite.yaml) hand-transcribed as Python if/else,
and one synchronous SQLAlchemy insert + commit per request into SQLite (the FastAPI SQL
tutorial's engine, session-per-request dependency and sync endpoint). Never used by the
service; the benchmark compares /decide against it and checks that both decide alike.

One concession to fairness: `num_threads=1` on every predict. With LightGBM's default
threading, OpenMP spins every core on each call and a server collapses (PERFORMANCE.md); a
baseline that slow would flatter us.

    TEXTBOOK_DATABASE_URL=sqlite:////tmp/textbook.db \
        uv run --all-groups gunicorn --chdir benchmarks textbook_app:app \
        -k uvicorn.workers.UvicornWorker -w 1 -b 127.0.0.1:8002
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import pandas as pd
import yaml
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, DateTime, Float, String, Text, create_engine
from sqlalchemy.orm import Session, declarative_base, sessionmaker

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("TEXTBOOK_MODEL_DIR", ROOT / "models" / "underwriting" / "1.0.0"))
DATABASE_URL = os.environ.get("TEXTBOOK_DATABASE_URL", "sqlite:///./textbook.db")

# ---- the model --------------------------------------------------------------------------------
card = yaml.safe_load((MODEL_DIR / "model_card.yaml").read_text())
booster = lgb.Booster(model_file=str(MODEL_DIR / card["model_file"]))
FEATURES = [f["name"] for f in card["features"]]
CATEGORY_CODES = {
    f["name"]: {c: i for i, c in enumerate(f["categories"])}
    for f in card["features"]
    if f["type"] == "category"
}
REASONS = {f["name"]: (f["reason_code"], f["reason"]) for f in card["features"]}

# ---- the database -----------------------------------------------------------------------------
engine = create_engine(DATABASE_URL, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
Base = declarative_base()


class DecisionRecord(Base):
    __tablename__ = "decision"
    decision_id = Column(String, primary_key=True)
    application_id = Column(String, index=True)
    outcome = Column(String)
    pd = Column(Float)
    risk_band = Column(String)
    approved_amount = Column(Float, nullable=True)
    reasons = Column(Text)
    request_json = Column(Text)
    decided_at = Column(DateTime)


Base.metadata.create_all(bind=engine)


def get_db():
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


# ---- request and response -----------------------------------------------------------------------
class Application(BaseModel):
    model_config = ConfigDict(extra="forbid")

    application_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    )
    age: int = Field(ge=16, le=100)
    seniority: int = Field(ge=0, le=60)
    records: bool
    term: int = Field(ge=1, le=120)
    expenses: float = Field(ge=0, le=100_000)
    amount: float = Field(ge=1, le=10_000_000)
    price: float = Field(ge=1, le=100_000_000)
    home: Literal["owner", "rent", "parents", "priv", "other", "ignore"] | None = None
    marital: Literal["married", "single", "separated", "widow", "divorced"] | None = None
    job: Literal["fixed", "freelance", "partime", "others"] | None = None
    income: float | None = Field(default=None, ge=0, le=1_000_000)
    assets: float | None = Field(default=None, ge=0, le=100_000_000)
    debt: float | None = Field(default=None, ge=0, le=100_000_000)


class ReasonOut(BaseModel):
    code: str
    source: str
    text: str
    contribution: float | None = None


class DecisionOut(BaseModel):
    decision_id: str
    application_id: str
    outcome: str
    approved_amount: float | None
    pd: float
    risk_band: str
    reasons: list[ReasonOut]


# ---- the policy: rules/risk_appetite.yaml, by hand ---------------------------------------------
def apply_policy(a: Application, pd_: float) -> tuple[str, str, float | None, list[ReasonOut]]:
    """(outcome, risk band, amount cap, rule reasons) — in the YAML's firing order."""
    fired: list[tuple[str, str, str]] = []  # (outcome, code, text)
    caps: list[float] = []

    # stage 1: knock-outs
    if a.age < 18:
        fired.append(("decline", "KO-01", "Applicant below minimum age"))
    if a.age + a.term / 12 > 75:
        fired.append(("decline", "KO-02", "Applicant above maximum age at loan maturity"))
    if a.amount > a.price:
        fired.append(("decline", "KO-03", "Requested amount exceeds the price of the goods"))
    if a.term < 6 or a.term > 72:
        fired.append(("decline", "KO-04", "Loan term outside policy (6 to 72 months)"))
    if a.records and pd_ > 0.30:
        fired.append(("decline", "KO-05", "Adverse credit records with elevated default risk"))
    # stage 1: risk band
    if pd_ < 0.08:
        band = "A"
    elif pd_ < 0.15:
        band = "B"
    elif pd_ < 0.25:
        band = "C"
    elif pd_ < 0.40:
        band = "D"
    else:
        band = "E"
    # stage 1: affordability ratios
    payment_to_income = debt_to_income = loan_to_price = None
    if a.income is not None and a.income > 0:
        payment_to_income = (a.expenses + a.amount / a.term) / a.income
        if a.debt is not None:
            debt_to_income = a.debt / (a.income * 12)
    if a.price > 0:
        loan_to_price = a.amount / a.price
    # stage 1: manual review
    if a.income is None or a.income <= 0:
        fired.append(
            ("refer", "RF-01", "Income not declared: affordability needs manual assessment")
        )
        caps.append(min(a.amount, 1000))
    if a.job == "freelance" and a.seniority < 2:
        fired.append(("refer", "RF-02", "Short self-employment history"))
    if a.records and not pd_ > 0.30:
        fired.append(("refer", "RF-03", "Adverse credit records on file"))
    if a.home is None or a.home in ("other", "ignore"):
        fired.append(("refer", "RF-04", "Housing situation could not be verified"))
    if a.job is None or a.job == "others":
        fired.append(("refer", "RF-05", "Employment type not declared or unclassified"))

    # stage 2: appetite by band, affordability, limits
    if band == "E":
        fired.append(("decline", "PD-01", "Estimated default risk above appetite"))
    if band == "D":
        fired.append(("refer", "PD-02", "Estimated default risk needs underwriter review"))
    if payment_to_income is not None and payment_to_income > 1.0:
        fired.append(("decline", "AF-01", "Expenses and instalment exceed income"))
    if payment_to_income is not None and 0.8 < payment_to_income <= 1.0:
        fired.append(("refer", "AF-02", "Expenses and instalment above 80% of income"))
    if debt_to_income is not None and debt_to_income > 0.5 and band in ("B", "C", "D"):
        fired.append(("refer", "AF-03", "High existing debt for this risk level"))
    if (
        loan_to_price is not None
        and loan_to_price > 0.9
        and band in ("C", "D")
        and a.assets is None
    ):
        fired.append(("refer", "AF-04", "No down payment or assets at this risk level"))
    if a.income is not None and a.income > 0:
        if band == "A":
            caps.append(min(a.amount, a.income * 12))
        elif band == "B":
            caps.append(min(a.amount, a.income * 9))
        elif band == "C":
            caps.append(min(a.amount, a.income * 6))
        elif band == "D" and a.assets is not None and a.debt is not None:
            caps.append(min(a.amount, a.income * 3, max(a.assets - a.debt, 0) + a.income))

    outcomes = [o for o, _, _ in fired]
    outcome = "decline" if "decline" in outcomes else "refer" if "refer" in outcomes else "approve"
    reasons = [ReasonOut(code=c, source="rule", text=t) for o, c, t in fired if o == outcome]
    return outcome, band, (min(caps) if caps else None), reasons


# ---- the endpoint ------------------------------------------------------------------------------
app = FastAPI(title="textbook underwriting")


@app.get("/health/ready")
def ready() -> dict:
    return {"ready": True}


@app.post("/decide", response_model=DecisionOut)
def decide(application: Application, db: Session = Depends(get_db)) -> DecisionOut:  # noqa: B008
    df = pd.DataFrame([application.model_dump()])
    X = df[FEATURES].copy()
    for column, codes in CATEGORY_CODES.items():
        X[column] = X[column].map(codes)
    X = X.astype("float64")
    pd_ = float(booster.predict(X, num_threads=1)[0])

    outcome, band, cap, reasons = apply_policy(application, pd_)
    if outcome != "approve":
        contrib = booster.predict(X, pred_contrib=True, num_threads=1)[0][:-1]
        top = sorted(zip(FEATURES, contrib, strict=True), key=lambda kv: -kv[1])
        for feature, value in [kv for kv in top if kv[1] > 0][:4]:
            code, text = REASONS[feature]
            reasons.append(
                ReasonOut(code=code, source="model", text=text, contribution=float(value))
            )
    approved = None
    if outcome == "approve":
        approved = float(application.amount if cap is None else min(application.amount, cap))

    decision = DecisionOut(
        decision_id=str(uuid.uuid4()),
        application_id=application.application_id,
        outcome=outcome,
        approved_amount=approved,
        pd=pd_,
        risk_band=band,
        reasons=reasons,
    )
    db.add(
        DecisionRecord(
            decision_id=decision.decision_id,
            application_id=decision.application_id,
            outcome=outcome,
            pd=pd_,
            risk_band=band,
            approved_amount=approved,
            reasons=json.dumps([r.model_dump() for r in reasons]),
            request_json=application.model_dump_json(),
            decided_at=datetime.now(UTC),
        )
    )
    db.commit()
    return decision
