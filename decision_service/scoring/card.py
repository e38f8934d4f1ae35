"""The model card: the single description of a model's features, provenance and metrics.

The request type, the rules' fact types and the scorer's feature order all come from here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

FeatureKind = Literal["integer", "number", "category", "boolean"]
MissingPolicy = Literal["allow", "reject"]


class ModelCardError(Exception):
    """The model directory cannot be served: missing files or a checksum mismatch."""


class FeatureSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str
    type: FeatureKind
    description: str
    reason_code: str  # adverse-action reason code, e.g. MDL-INCOME
    reason: str  # adverse-action text cited when this feature raised the PD
    missing: MissingPolicy = "reject"
    range: tuple[float, float] | None = None  # allowed [min, max] for numbers
    categories: tuple[str, ...] | None = None  # allowed values; LightGBM code = index
    monotone: Literal[-1, 0, 1] = 0  # -1: never raises PD as it grows; +1: never lowers it
    # A prohibited or restricted basis under fair-lending law (e.g. ECOA / Regulation B), and
    # what the law allows: reviewers and the promotion gate read it.
    protected_basis: str | None = None


class TrainingData(msgspec.Struct, frozen=True):
    source: str
    rows: int
    sha256: str
    target: str
    split: dict[str, int]
    split_seed: int | None = None  # the seeded stratified split's seed (reproducible split)


class ModelCard(msgspec.Struct, frozen=True):
    name: str
    version: str
    created: str
    model_file: str
    model_sha256: str
    description: str
    training_data: TrainingData
    features: tuple[FeatureSpec, ...]
    parameters: dict[str, Any]
    selection: dict[str, Any]
    metrics: dict[str, Any]
    library_versions: dict[str, str]
    code_commit: str
    reference_distributions: dict[str, Any]
    intended_use: str = ""
    # The request contract when it is wider than the model's inputs: fields loan systems send
    # (and rules may read) that the model does not use, e.g. `marital` after 1.1.0 stopped
    # using it. Empty: the request is exactly `features`.
    application_fields: tuple[FeatureSpec, ...] = ()
    # Approval rates and adverse impact ratios by protected group on held-out data, under the
    # shipped policy (see decision_service/training/fair_lending.py).
    fair_lending: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def request_fields(self) -> tuple[FeatureSpec, ...]:
        """The fields of an application (the request type), in the contract's order."""
        return self.application_fields or self.features

    @property
    def unused_fields(self) -> list[str]:
        """Application fields accepted but never given to the model."""
        used = set(self.feature_names)
        return [f.name for f in self.request_fields if f.name not in used]


# libyaml's parser when present (same constructor, same values): the pure-Python one spends
# ~0.5 s of CPU on a card, which `models list` reads for every version.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_card(model_dir: Path) -> ModelCard:
    """Read `model_card.yaml` and check the model file it names against its sha256."""
    card_path = model_dir / "model_card.yaml"
    if not card_path.is_file():
        raise ModelCardError(f"{card_path}: model card not found")
    try:
        card = msgspec.convert(yaml.load(card_path.read_text(), Loader=_LOADER), ModelCard)
    except (yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ModelCardError(f"{card_path}: invalid model card: {exc}") from exc
    model_path = model_dir / card.model_file
    if not model_path.is_file():
        raise ModelCardError(f"{model_path}: model file named by the card is missing")
    actual = sha256_file(model_path)
    if actual != card.model_sha256:
        raise ModelCardError(
            f"{model_path}: sha256 {actual} does not match the card's {card.model_sha256}; "
            "refusing to serve a model that is not the one described"
        )
    return card


def dump_card(card: ModelCard, path: Path) -> None:
    data = msgspec.to_builtins(card)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
