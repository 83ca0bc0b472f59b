"""The report vocabulary: the published id scheme on a transformers fast tokenizer.

Reports are already cleaned and lower-cased; tokens are whitespace-separated words. The
vocabulary is the train split's words with frequency >= ``min_frequency``, sorted in Python
string order, with ids from 4 upward after the specials ``<pad>`` 0, ``<sos>`` 1, ``<eos>`` 2,
``<unk>`` 3 (reference-model spec, section 8). It is saved both as the published
``token2id.json`` / ``id2token.json`` pair and as a ``PreTrainedTokenizerFast`` directory
(a word-level ``tokenizer.json``), which is what training and decoding load.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)
PAD_ID, SOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def build_vocab(reports: Iterable[str], min_frequency: int = 3) -> dict[str, int]:
    """token -> id in the published scheme, from the (train) reports."""
    counts = Counter(tok for report in reports for tok in report.split())
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for tok in sorted(t for t, c in counts.items() if c >= min_frequency):
        if tok not in vocab:
            vocab[tok] = len(vocab)
    return vocab


def make_tokenizer(token2id: dict[str, int]) -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer over ``token2id`` (which must hold the four specials)."""
    for i, tok in enumerate(SPECIALS):
        if token2id.get(tok) != i:
            raise ValueError(
                f"vocabulary must map {tok} to {i} (the published id scheme), got {token2id.get(tok)}"
            )
    ids = sorted(token2id.values())
    if ids != list(range(len(ids))):
        raise ValueError("vocabulary ids must be 0..V-1 without gaps")
    core = Tokenizer(WordLevel(vocab=dict(token2id), unk_token=UNK))
    core.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, bos_token=SOS, eos_token=EOS, unk_token=UNK
    )


def token2id_of(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    return dict(sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]))


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Write the transformers files plus the published ``token2id.json`` / ``id2token.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    t2i = token2id_of(tokenizer)
    (directory / "token2id.json").write_text(json.dumps(t2i, ensure_ascii=False), encoding="utf-8")
    i2t = {str(i): t for t, i in t2i.items()}
    (directory / "id2token.json").write_text(json.dumps(i2t, ensure_ascii=False), encoding="utf-8")
    return directory


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer directory written by ``save_tokenizer`` (local files only)."""
    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{directory} holds no tokenizer.json (expected a tokenizer directory)")
    return PreTrainedTokenizerFast.from_pretrained(str(directory), local_files_only=True)


def load_published_vocab(token2id_path: str | Path, id2token_path: str | Path) -> PreTrainedTokenizerFast:
    """A tokenizer from the published ``token2id.json`` / ``id2token.json`` pair (checked for agreement)."""
    t2i = json.loads(Path(token2id_path).read_text(encoding="utf-8"))
    i2t = json.loads(Path(id2token_path).read_text(encoding="utf-8"))
    if not isinstance(t2i, dict) or not isinstance(i2t, dict):
        raise ValueError(f"{token2id_path} / {id2token_path}: expected JSON objects")
    for key, tok in i2t.items():
        if t2i.get(tok) != int(key):
            raise ValueError(
                f"{id2token_path}: id {key} -> {tok!r} disagrees with {token2id_path} ({t2i.get(tok)})"
            )
    if len(i2t) != len(t2i):
        raise ValueError(f"{token2id_path} has {len(t2i)} tokens but {id2token_path} has {len(i2t)}")
    return make_tokenizer({str(k): int(v) for k, v in t2i.items()})


def encode_reports(
    tokenizer: PreTrainedTokenizerFast, reports: list[str], text_seq_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch-encode cleaned reports -> ``(input_ids, labels, pad_mask)``, each ``[b, text_seq_len]``.

    input = <sos> w1..wm <eos> <pad>..., labels = w1..wm <eos> <pad>..., m <= text_seq_len - 2.
    """
    n = len(reports)
    input_ids = np.full((n, text_seq_len), PAD_ID, dtype=np.int64)
    labels = np.full((n, text_seq_len), PAD_ID, dtype=np.int64)
    encoded = tokenizer(list(reports), add_special_tokens=False)["input_ids"] if n else []
    for row, ids in enumerate(encoded):
        ids = ids[: text_seq_len - 2]
        m = len(ids)
        input_ids[row, 0] = SOS_ID
        input_ids[row, 1 : m + 1] = ids
        input_ids[row, m + 1] = EOS_ID
        labels[row, :m] = ids
        labels[row, m] = EOS_ID
    return input_ids, labels, input_ids != PAD_ID


def decode_ids(tokenizer: PreTrainedTokenizerFast, ids: Iterable[int], stop_at_eos: bool = True) -> str:
    """Token ids -> report text, dropping <sos>/<eos>/<pad> (cut at the first <eos> by default)."""
    out = []
    id2tok = tokenizer.convert_ids_to_tokens
    for i in ids:
        i = int(i)
        if i == EOS_ID and stop_at_eos:
            break
        if i in (PAD_ID, SOS_ID, EOS_ID):
            continue
        out.append(id2tok(i))
    return " ".join(out)
