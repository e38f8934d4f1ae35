"""The underwriting model: its card, the request type it implies, and fast scoring."""

from decision_service.scoring.application import application_type
from decision_service.scoring.card import FeatureSpec, ModelCard, ModelCardError, load_card
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
