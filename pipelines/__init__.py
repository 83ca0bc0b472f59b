"""Ingestion pipelines: one per source on one shared shape (``pipelines.base``), run by
``pipelines.runner`` with Ray Data. ``get_pipeline(name)`` returns a source's pipeline."""

from __future__ import annotations

import importlib

SOURCES = ("covctr", "mmretinal", "pgross", "roco")


def get_pipeline(name: str):
    """The ``Pipeline`` of source ``name`` (one of ``SOURCES``)."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)} (or phantom)")
    return importlib.import_module(f"pipelines.{name}").PIPELINE
