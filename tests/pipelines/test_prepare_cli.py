"""``micar prepare``: the output contract, the summary, refusing / replacing existing output."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from rawfixtures import write_covctr

from micar.cli import main

pytestmark = pytest.mark.ray


def _digest(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_module):
    root = tmp_path_factory.mktemp("cli")
    raw = write_covctr(root / "raw", n=30)
    out = root / "out"
    args = ["prepare", "covctr", "--raw", str(raw), "--out", str(out), "--image-size", "32", "--resize-size", "36",
            "--rows-per-shard", "10", "--min-frequency", "1"]  # fmt: skip
    assert main(args) == 0
    return raw, out, args


def test_contract_layout_and_readback(prepared):
    import ray.data

    _, out, _ = prepared
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("dataset", "splits", "rejects", "image_size", "vocab_size", "seeds", "cleaning_version",
                "source_files_sha256", "input_rows"):  # fmt: skip
        assert key in manifest
    assert manifest["dataset"] == "covctr" and manifest["splits"] == {"train": 24, "val": 3, "test": 3}
    assert manifest["rejects"] == {} and manifest["input_rows"] == 30
    assert set(manifest["source_files_sha256"]) == {"reports.csv", "images/ (listing)"}
    assert sorted(p.name for p in (out / "train").glob("*.parquet")) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    for split, n in manifest["splits"].items():
        ds = ray.data.read_parquet(str(out / split))
        assert ds.schema().names == ["id", "report", "image", "source"]
        rows = ds.take_all()
        assert len(rows) == n
        for row in rows:
            img = Image.open(io.BytesIO(row["image"]))
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (32, 32)
            assert row["report"].endswith(" .") and row["source"] == "covctr"
    schema = pq.read_schema(next((out / "val").glob("*.parquet")))
    assert schema.field("image").type == pa.binary() and schema.field("id").type == pa.string()
    tok = out / "tokenizer"
    assert {"token2id.json", "id2token.json", "tokenizer.json"} <= {p.name for p in tok.iterdir()}
    assert len(json.loads((tok / "token2id.json").read_text())) == manifest["vocab_size"]
    assert pq.read_table(out / "rejects.parquet").num_rows == 0


def test_refuses_existing_output_without_overwrite(prepared, capsys):
    _, out, args = prepared
    before = _digest(out)
    assert main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _digest(out) == before


def test_overwrite_replaces_atomically_and_reproducibly(prepared, capsys):
    _, out, args = prepared
    before = _digest(out)
    (out / "stale.txt").write_text("from an older run")
    assert main([*args, "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "24 rows" in printed and "vocabulary" in printed
    assert not (out / "stale.txt").exists()
    assert _digest(out) == before  # same input, same bytes
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_overwrite_refuses_a_directory_that_is_not_prepared(prepared, tmp_path, capsys):
    raw, _, _ = prepared
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("do not delete")
    assert main(["prepare", "covctr", "--raw", str(raw), "--out", str(target), "--overwrite"]) == 2
    assert "not a prepared directory" in capsys.readouterr().err
    assert (target / "thesis.tex").exists()


def test_no_resize_keeps_the_decoded_size(prepared, tmp_path):
    raw, _, _ = prepared
    out = tmp_path / "orig"
    assert main(["prepare", "covctr", "--raw", str(raw), "--out", str(out), "--no-resize"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image_size"] is None and manifest["resized"] is False
    row = pq.read_table(out / "test").to_pylist()[0]
    assert Image.open(io.BytesIO(row["image"])).size == (40, 30)
    # Training batches square images of one size: such a directory is refused with the fix.
    from micar.data.dataset import load_manifest

    with pytest.raises(ValueError, match="--no-resize"):
        load_manifest(out)


def test_fail_mode_and_bad_arguments(prepared, tmp_path, capsys):
    raw, _, _ = prepared
    broken = tmp_path / "raw"
    write_covctr(broken, n=12)
    (broken / "images" / "case004.png").unlink()
    out = tmp_path / "o"
    assert main(["prepare", "covctr", "--raw", str(broken), "--out", str(out), "--on-bad-row", "fail"]) == 2
    err = capsys.readouterr().err
    assert "reports.csv row 4" in err and "missing_image" in err and not out.exists()
    assert main(["prepare", "covctr", "--raw", str(raw), "--out", str(out), "--image-size", "64",
                 "--resize-size", "32"]) == 2  # fmt: skip
    assert "--resize-size (32) must be >= --image-size (64)" in capsys.readouterr().err
    assert main(["prepare", "covctr", "--raw", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "raw directory not found" in capsys.readouterr().err
