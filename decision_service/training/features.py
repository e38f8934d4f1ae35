"""The application fields and the features of each underwriting model version: the source of
the model cards.

Only what is known when the application arrives. Ranges are plausibility bounds for input
validation, not the training data's min/max: an application outside them is rejected (422);
one inside them but outside policy (e.g. age 17) is decided, and declined by a rule.

The request contract (APPLICATION_FIELDS) is the same for every version: loan systems keep
sending the same body. A version's model may use fewer of the fields (FEATURE_SETS).
"""

from dataclasses import dataclass

import msgspec

from decision_service.scoring.card import FeatureSpec

AGE_BASIS = (
    "age (ECOA / Regulation B): may be used only in an empirically derived, demonstrably and "
    "statistically sound system, and never to the detriment of applicants aged 62 or older"
)
MARITAL_BASIS = "marital status (ECOA / Regulation B): a prohibited basis; must not be used"

APPLICATION_FIELDS: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        name="age",
        type="integer",
        range=(16, 100),
        description="Applicant age in years",
        reason_code="MDL-AGE",
        reason="Applicant age profile associated with higher default rates",
        protected_basis=AGE_BASIS,
    ),
    FeatureSpec(
        name="seniority",
        type="integer",
        range=(0, 60),
        monotone=-1,
        description="Years with the current employer",
        reason_code="MDL-SENIORITY",
        reason="Length of time with current employer",
    ),
    FeatureSpec(
        name="home",
        type="category",
        categories=("owner", "rent", "parents", "priv", "other", "ignore"),
        missing="allow",
        description="Housing: owner, rent, lives with parents, private, other, not stated",
        reason_code="MDL-HOME",
        reason="Housing status",
    ),
    FeatureSpec(
        name="marital",
        type="category",
        categories=("married", "single", "separated", "widow", "divorced"),
        missing="allow",
        description="Marital status",
        reason_code="MDL-MARITAL",
        reason="Household composition",
        protected_basis=MARITAL_BASIS,
    ),
    FeatureSpec(
        name="records",
        type="boolean",
        monotone=1,
        description="Applicant has adverse records with credit bureaus",
        reason_code="MDL-RECORDS",
        reason="Adverse credit bureau records",
    ),
    FeatureSpec(
        name="job",
        type="category",
        categories=("fixed", "freelance", "partime", "others"),
        missing="allow",
        description="Employment type: fixed contract, freelance, part-time, other",
        reason_code="MDL-JOB",
        reason="Type of employment",
    ),
    FeatureSpec(
        name="term",
        type="integer",
        range=(1, 120),
        description="Requested loan term in months",
        reason_code="MDL-TERM",
        reason="Requested repayment term",
    ),
    FeatureSpec(
        name="expenses",
        type="number",
        range=(0, 100_000),
        monotone=1,
        description="Monthly household expenses (data set currency units)",
        reason_code="MDL-EXPENSES",
        reason="Level of monthly expenses",
    ),
    FeatureSpec(
        name="income",
        type="number",
        range=(0, 1_000_000),
        missing="allow",
        monotone=-1,
        description="Monthly net income (data set currency units); may be missing",
        reason_code="MDL-INCOME",
        reason="Income insufficient or not verified",
    ),
    FeatureSpec(
        name="assets",
        type="number",
        range=(0, 100_000_000),
        missing="allow",
        monotone=-1,
        description="Value of assets owned; may be missing",
        reason_code="MDL-ASSETS",
        reason="Limited assets",
    ),
    FeatureSpec(
        name="debt",
        type="number",
        range=(0, 100_000_000),
        missing="allow",
        monotone=1,
        description="Outstanding debt; may be missing",
        reason_code="MDL-DEBT",
        reason="Level of existing debt",
    ),
    FeatureSpec(
        name="amount",
        type="number",
        range=(1, 10_000_000),
        monotone=1,
        description="Requested loan amount",
        reason_code="MDL-AMOUNT",
        reason="Amount requested relative to profile",
    ),
    FeatureSpec(
        name="price",
        type="number",
        range=(1, 100_000_000),
        description="Price of the goods being financed",
        reason_code="MDL-PRICE",
        reason="Price of the goods financed",
    ),
)

FEATURES = APPLICATION_FIELDS  # 1.0.0's model uses every application field


def _without(names: set[str]) -> tuple[FeatureSpec, ...]:
    return tuple(f for f in APPLICATION_FIELDS if f.name not in names)


def _age_never_against_older() -> tuple[FeatureSpec, ...]:
    return tuple(
        msgspec.structs.replace(f, monotone=-1) if f.name == "age" else f
        for f in _without({"marital"})
    )


@dataclass(frozen=True)
class FeatureSet:
    """What one model version is trained on, and why."""

    name: str
    features: tuple[FeatureSpec, ...]
    rationale: str


FEATURE_SETS: dict[str, FeatureSet] = {
    "all": FeatureSet("all", FEATURES, "every application field (1.0.0)"),
    "fair-age-monotone": FeatureSet(
        "fair-age-monotone",
        _age_never_against_older(),
        "marital dropped (prohibited basis); age kept with a monotone -1 constraint, so being "
        "older never raises pd",
    ),
    "fair-age-dropped": FeatureSet(
        "fair-age-dropped",
        _without({"marital", "age"}),
        "marital dropped (prohibited basis); age dropped",
    ),
}
# The feature set each released version was trained on (`train --version` picks it).
# 1.1.0: age dropped rather than constrained; see models/underwriting/1.1.0/CHOICE.md.
VERSION_FEATURE_SETS: dict[str, str] = {"1.0.0": "all", "1.1.0": "fair-age-dropped"}

# Columns of modeldata/credit_data → application fields. `Status` is the target.
SOURCE_COLUMNS = {
    "Age": "age",
    "Seniority": "seniority",
    "Home": "home",
    "Marital": "marital",
    "Records": "records",
    "Job": "job",
    "Time": "term",
    "Expenses": "expenses",
    "Income": "income",
    "Assets": "assets",
    "Debt": "debt",
    "Amount": "amount",
    "Price": "price",
}
