"""Challengers: rule files marked `role: challenger` (optionally with a model version and a
sample share) that run on live traffic after the champion, recorded and never answered.

`Shadow` and `sampled` are imported on first use (PEP 562): `challengers report` only reads
the database and need not load the pipeline and LightGBM."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decision_service.challengers.shadow import Shadow, sampled

__all__ = ["Shadow", "sampled"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from decision_service.challengers import shadow

        return getattr(shadow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
