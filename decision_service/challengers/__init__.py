"""Challengers: rule files marked `role: challenger` (optionally with a model version and a
sample share) that run on live traffic after the champion, recorded and never answered."""

from decision_service.challengers.shadow import Shadow, sampled

__all__ = ["Shadow", "sampled"]
