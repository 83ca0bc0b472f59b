"""Report cleaning shared by MM-Retinal and PEIR Gross (the published R2Gen-style sentence cleaner)."""

from __future__ import annotations

import re

# Step 1 (MM-Retinal only): figure references, case-insensitive, replaced by a space.
FIGURE_REF = re.compile(
    r"\b(?:same (?:person|patient|eye) as (?:fig(?:ure|s)\.|figures?)? \d{1,2}-\d{1,2}[a-zA-Z]?(?: and [a-zA-Z])?"
    r"|fig(?:ure|s)?\.? \d{1,2}-\d{1,2}[a-zA-Z]?|[a-z] (?:for|is|shows))\b[.,]?",
    re.IGNORECASE,
)
# Step 4's character class as published: ``:-\[`` is a RANGE (':' to '['), which also covers
# ';<=>?@', the capitals and '['; capitals are already lower-cased when it runs.
SENTENCE_JUNK = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")
_END_WITHOUT_STOP = re.compile(r"([^.\n])(\n|$)")
_WHITESPACE = re.compile(r"\s+")


def remove_figure_refs(text: str) -> str:
    """Steps 1-2: drop figure references, collapse white space, end lines with '.', lower-case."""
    text = FIGURE_REF.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = _END_WITHOUT_STOP.sub(r"\1.\2", text)
    return text.lower()


def split_sentences(text: str) -> list[str]:
    """Step 3: the published sentence pass (numbered-list markers removed), split on '. '."""
    for _ in range(3):
        text = text.replace("..", ".")
    text = text.replace("1. ", "")
    for k in range(2, 6):
        text = text.replace(f". {k}. ", ". ")
    for k in range(2, 6):
        text = text.replace(f" {k}. ", ". ")
    text = text.replace(". .", ".")
    return text.strip().lower().split(". ")


def clean_sentence(sentence: str) -> str:
    """Step 4: delete quotes and slashes, strip, lower-case, delete the junk character class."""
    for ch in ('"', "/", "\\", "'"):
        sentence = sentence.replace(ch, "")
    return SENTENCE_JUNK.sub("", sentence.strip().lower())


def sentence_clean(text: str) -> str:
    """Steps 3-5: sentence pass, per-sentence cleaning, join with ' . ' and end with ' .'."""
    return " . ".join(clean_sentence(s) for s in split_sentences(text)) + " ."
