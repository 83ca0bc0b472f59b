"""Training MicarVLMoE on Ray Train: ``train(cfg) -> TrainResult`` (see ``micar.training.trainer``).

Importing this package pulls in no Ray; ``train`` imports it when called.
"""

from micar.training.trainer import TrainResult, collect_result, train

__all__ = ["TrainResult", "collect_result", "train"]
