"""The application-time features of the underwriting model: the source of the model card.

Only what is known when the application arrives. Ranges are plausibility bounds for input
validation, not the training data's min/max: an application outside them is rejected (422);
one inside them but outside policy (e.g. age 17) is decided, and declined by a rule.
"""

from decision_service.scoring.card import FeatureSpec

FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        name="age",
        type="integer",
        range=(16, 100),
        description="Applicant age in years",
        reason_code="MDL-AGE",
        reason="Applicant age profile associated with higher default rates",
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
