"""The published implementation's golden vectors (``../shared/data/reference-vectors``).

Each file holds ``param.*`` (the published module's state dict), ``in.*`` and ``out.*`` tensors
and a JSON ``config`` metadata entry. Tests that need them carry ``@needs_golden``: they are
skipped, with the path in the reason, only where the shared directory is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

GOLDEN = Path(__file__).resolve().parents[1] / "../shared/data/reference-vectors"
needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden vectors not found at {GOLDEN}")


def golden(name: str) -> tuple[dict, dict, dict, dict]:
    """(config, params, inputs, outputs) of one golden file."""
    path = GOLDEN / f"{name}.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        cfg = json.loads(fh.metadata()["config"])

    def part(prefix: str) -> dict:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    return cfg, part("param."), part("in."), part("out.")
