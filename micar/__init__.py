"""micar: a Ray-distributed experiment platform for MicarVLMoE (vision-language MoE report generation).

Importing ``micar`` pulls in no Ray and no MLflow; those live in training, sweeping, tracking and the CLI.
"""

__version__ = "0.1.0"


def load_checkpoint(path, map_location="cpu"):
    """Load a native checkpoint directory -> ``(model, tokenizer, config)``."""
    from micar.checkpoint import load_checkpoint as _load

    return _load(path, map_location=map_location)


__all__ = ["load_checkpoint", "__version__"]
