"""The metric suite: pycocoevalcap BLEU-1..4, METEOR, ROUGE-L and CIDEr (never SPICE).

Reports are already whitespace-tokenised, so the strings are scored as given (no PTB
tokenizer). ``score`` starts one METEOR JVM per call and closes it before returning; when Java
is missing the other metrics are still reported and METEOR is ``nan`` with a warning.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

METRIC_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _one_line(text: str) -> str:
    # METEOR speaks a line protocol: a newline inside a report would desynchronise the JVM.
    # (pycocoevalcap itself strips '|||' from hypotheses.)
    return str(text).replace("\r", " ").replace("\n", " ")


def _start_meteor() -> Any:
    """Start METEOR's JVM (it loads its paraphrase table while the other metrics run); None without Java."""
    from pycocoevalcap.meteor.meteor import Meteor

    if shutil.which("java") is None:
        logger.warning(
            "METEOR needs Java (a `java` on PATH) and none was found: METEOR is reported as nan, "
            "the other metrics are unaffected. Install a JRE (e.g. openjdk-17-jre-headless) to get it."
        )
        return None
    return Meteor()


def _finish_meteor(meteor: Any, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """Corpus METEOR from the started JVM, which is closed before returning."""
    if meteor is None:
        return math.nan
    try:
        gts = {i: [_one_line(r) for r in refs] for i, refs in gts.items()}
        res = {i: [_one_line(h) for h in hyps] for i, hyps in res.items()}
        value, _ = meteor.compute_score(gts, res)
    finally:
        proc = meteor.meteor_p
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
        proc.kill()
        proc.wait()
    return float(value)


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Score generated reports against one or more references each.

    Returns ``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}``: the
    corpus values pycocoevalcap's ``Bleu(4)``, ``Meteor``, ``Rouge`` and ``Cider`` give on these
    strings as they are (only line breaks are turned into spaces for METEOR's line protocol). ``references[i]`` lists the references of ``predictions[i]`` (a bare string is
    taken as a single reference).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError(f"score: {len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        raise ValueError("score: nothing to score (no predictions)")
    res: dict[int, list[str]] = {}
    gts: dict[int, list[str]] = {}
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs:
            raise ValueError(f"score: prediction {i} has no reference")
        res[i] = [str(pred)]
        gts[i] = [str(r) for r in refs]

    meteor = _start_meteor()
    try:
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        cider, _ = Cider().compute_score(gts, res)
    finally:
        meteor_value = _finish_meteor(meteor, gts, res)
    out = {f"BLEU-{n + 1}": float(bleu[n]) for n in range(4)}
    out["METEOR"] = meteor_value
    out["ROUGE-L"] = float(rouge)
    out["CIDEr"] = float(cider)
    return out


def monitored_score(scores: Mapping[str, float]) -> float:
    """The published model-selection score: (BLEU1+BLEU2+BLEU3+BLEU4)/8 + METEOR/4 + ROUGE-L/4.

    A missing (``nan``) METEOR counts as 0, so selection still works without Java.
    """
    meteor = scores.get("METEOR", math.nan)
    meteor = 0.0 if meteor is None or math.isnan(meteor) else meteor
    bleu = sum(scores[f"BLEU-{n}"] for n in range(1, 5))
    return bleu / 8 + meteor / 4 + scores["ROUGE-L"] / 4


def json_safe(scores: Mapping[str, float]) -> dict[str, float | None]:
    """Scores with ``nan`` as ``None`` (strict JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scores.items()}
