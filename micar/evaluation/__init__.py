"""Scoring generated reports (pycocoevalcap) and decoding splits with a trained model.

``micar.evaluation.score`` needs only pycocoevalcap (and Java for METEOR); the decoding helpers
live in ``micar.evaluation.decode`` and import torch.
"""

from micar.evaluation.metrics import METRIC_KEYS, json_safe, monitored_score, score

__all__ = ["METRIC_KEYS", "json_safe", "monitored_score", "score"]
