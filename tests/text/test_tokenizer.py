"""micar.text.tokenizer: the published id scheme, target layout, save/load round trip."""

import json

import numpy as np
import pytest

from micar.text.tokenizer import (
    EOS_ID,
    PAD_ID,
    SOS_ID,
    UNK_ID,
    build_vocab,
    decode_ids,
    encode_reports,
    load_published_vocab,
    load_tokenizer,
    make_tokenizer,
    save_tokenizer,
)

REPORTS = [
    "the lungs are clear .",
    "the lungs show opacity , left lower lobe .",
    "the heart is normal .",
    "the lungs are clear .",
    "the lungs show opacity .",
]


def test_vocab_is_frequency_filtered_and_sorted():
    vocab = build_vocab(REPORTS, min_frequency=3)
    # the (5), lungs (4), . (5), are (2 -> dropped), clear (2 -> dropped)
    assert vocab == {"<pad>": 0, "<sos>": 1, "<eos>": 2, "<unk>": 3, ".": 4, "lungs": 5, "the": 6}
    assert len(build_vocab(REPORTS, min_frequency=1)) == 4 + len({t for r in REPORTS for t in r.split()})


def test_encode_layout_truncation_and_unk():
    tok = make_tokenizer(build_vocab(REPORTS, min_frequency=3))
    ids, labels, mask = encode_reports(tok, ["the lungs are clear .", "the " * 20], text_seq_len=8)
    assert ids[0].tolist() == [SOS_ID, 6, 5, UNK_ID, UNK_ID, 4, EOS_ID, PAD_ID]
    assert labels[0].tolist() == [6, 5, UNK_ID, UNK_ID, 4, EOS_ID, PAD_ID, PAD_ID]
    # truncated to text_seq_len - 2 words
    assert ids[1].tolist() == [SOS_ID] + [6] * 6 + [EOS_ID]
    assert labels[1].tolist() == [6] * 6 + [EOS_ID, PAD_ID]
    assert mask.dtype == np.bool_ and mask[0].sum() == 7


def test_decode_drops_specials_and_keeps_unk():
    tok = make_tokenizer(build_vocab(REPORTS, min_frequency=3))
    assert decode_ids(tok, [SOS_ID, 6, UNK_ID, 4, EOS_ID, 5]) == "the <unk> ."
    assert decode_ids(tok, [6, EOS_ID, 5], stop_at_eos=False) == "the lungs"


def test_save_load_roundtrip_writes_published_pair(tmp_path):
    tok = make_tokenizer(build_vocab(REPORTS, min_frequency=1))
    save_tokenizer(tok, tmp_path / "tok")
    t2i = json.loads((tmp_path / "tok" / "token2id.json").read_text())
    i2t = json.loads((tmp_path / "tok" / "id2token.json").read_text())
    assert t2i["<pad>"] == 0 and i2t["3"] == "<unk>"
    assert all(t2i[t] == int(i) for i, t in i2t.items())
    loaded = load_tokenizer(tmp_path / "tok")
    a = encode_reports(tok, REPORTS, 12)[0]
    b = encode_reports(loaded, REPORTS, 12)[0]
    assert (a == b).all()
    again = load_published_vocab(tmp_path / "tok" / "token2id.json", tmp_path / "tok" / "id2token.json")
    assert again.get_vocab() == tok.get_vocab()


def test_bad_vocab_files_are_errors(tmp_path):
    with pytest.raises(ValueError, match="<pad>"):
        make_tokenizer({"a": 0})
    (tmp_path / "t2i.json").write_text(json.dumps({"<pad>": 0, "<sos>": 1, "<eos>": 2, "<unk>": 3, "a": 4}))
    (tmp_path / "i2t.json").write_text(
        json.dumps({"0": "<pad>", "1": "<sos>", "2": "<eos>", "3": "<unk>", "4": "b"})
    )
    with pytest.raises(ValueError, match="disagrees"):
        load_published_vocab(tmp_path / "t2i.json", tmp_path / "i2t.json")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
