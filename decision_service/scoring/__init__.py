"""The underwriting model: its card, the request type it implies, and fast scoring.

`Scorer` and `Explanation` are imported on first use (PEP 562): they load LightGBM, which the
card, the registry and the commands that never score (`models list`, `rules check`) do not need.
"""

from typing import TYPE_CHECKING, Any

from decision_service.scoring.application import application_type
from decision_service.scoring.card import FeatureSpec, ModelCard, ModelCardError, load_card

if TYPE_CHECKING:
    from decision_service.scoring.scorer import Explanation, Scorer

__all__ = [
    "Explanation",
    "FeatureSpec",
    "ModelCard",
    "ModelCardError",
    "Scorer",
    "application_type",
    "load_card",
]


def __getattr__(name: str) -> Any:
    if name in ("Explanation", "Scorer"):
        from decision_service.scoring import scorer

        return getattr(scorer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
