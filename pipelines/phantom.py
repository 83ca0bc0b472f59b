"""The phantom: a procedural, seeded synthetic data set that a small model can learn on a laptop.

Three modalities are drawn with numpy + PIL: ``ct`` (an axial chest slice: body, two lung fields,
heart, spine), ``fundus`` (a colour fundus photograph: orange retina, optic disc on the side of
the eye, macula) and ``angio`` (a grey fluorescein angiogram of the same). An image is either
normal (``normal_fraction`` of them) or holds ONE finding group: ``count`` (1-3) blobs of one
``finding`` type (bright or dark, per modality), one ``size`` (small / large, radius x2), all in
one quadrant (``side`` = left / right half of the image, ``region`` = upper / lower half). The
cues are big and high contrast at 64 x 64, and the report is a deterministic function of what is
drawn (plus the eye side for retinal images), e.g.

    axial ct image of the chest . there are two large nodules in the upper left lung .
    the rest of the lungs is clear .

Reports are already in cleaned form (lower case, `` .`` split off, no commas, digits, hyphens or
colons), so every layout's cleaning gives back exactly the same text. ``write_phantom`` writes the
raw files in any of the four layouts (``covctr``, ``mmretinal``, ``pgross``, ``roco``) plus
``findings.json`` ({id: findings}) and ``phantom.json`` (how it was made); ``parse_findings`` and
``finding_f1`` score generated reports against the drawn findings.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

GENERATOR_VERSION = "phantom-2"
LAYOUTS = ("covctr", "mmretinal", "pgross", "roco")
# The MM-Retinal layout splits each of the three modalities 80/10/10: 6 cases each at least.
MIN_CASES = 18
MODALITIES = ("ct", "fundus", "angio")
# finding (singular, plural) per modality: the first is bright, the second dark.
FINDINGS = {
    "ct": (("nodule", "nodules"), ("cyst", "cysts")),
    "fundus": (("exudate", "exudates"), ("hemorrhage", "hemorrhages")),
    "angio": (("leak", "leaks"), ("occlusion", "occlusions")),
}
SIDES = ("left", "right")
REGIONS = ("upper", "lower")
SIZES = ("small", "large")
COUNTS = (1, 2, 3)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
ORGAN = {"ct": "lung", "fundus": "retina", "angio": "retina"}
# MM-Retinal layout: phantom modality -> modality folder / CSV.
MMRETINAL_FOLDER = {"fundus": "CFP", "angio": "FFA", "ct": "OCT"}

_PLURAL_TO_SINGULAR = {p: s for pairs in FINDINGS.values() for s, p in pairs} | {
    s: s for pairs in FINDINGS.values() for s, _ in pairs
}
_NUMBER = {w: n for n, w in NUMBER_WORDS.items()}
_FINDING_RE = re.compile(
    r"there (?:is|are) (one|two|three) (small|large) (\w+) in the (upper|lower) (left|right) (?:lung|retina)"
)


@dataclass(frozen=True)
class Finding:
    """One drawn finding group: ``count`` blobs of ``finding`` of one ``size`` in one quadrant."""

    finding: str
    side: str
    region: str
    size: str
    count: int

    def key(self) -> tuple[str, str, str, str, int]:
        return (self.finding, self.side, self.region, self.size, self.count)


@dataclass
class PhantomCase:
    """One phantom image's description (what is drawn) and its report."""

    index: int
    modality: str
    eye: str  # "left"/"right" for retinal images, "" for ct
    findings: list[Finding] = field(default_factory=list)

    @property
    def report(self) -> str:
        return make_report(self.modality, self.eye, self.findings)


def make_report(modality: str, eye: str, findings: Sequence[Finding]) -> str:
    """The cleaned report of a drawn case (a pure function of what is drawn)."""
    if modality == "ct":
        head = "axial ct image of the chest ."
        normal, tail = "the lungs are clear .", "the rest of the lungs is clear ."
    elif modality == "fundus":
        head = f"colour fundus photograph of the {eye} eye ."
        normal, tail = "the optic disc and macula are normal .", "the optic disc is normal ."
    else:
        head = f"fluorescein angiogram of the {eye} eye ."
        normal, tail = "the retinal vessels fill normally .", "the optic disc is normal ."
    if not findings:
        return f"{head} {normal} no abnormality is seen ."
    sentences = [head]
    for f in findings:
        singular, plural = next(p for p in FINDINGS[modality] if p[0] == f.finding)
        verb = "is" if f.count == 1 else "are"
        noun = singular if f.count == 1 else plural
        sentences.append(
            f"there {verb} {NUMBER_WORDS[f.count]} {f.size} {noun} in the {f.region} {f.side} {ORGAN[modality]} ."
        )
    sentences.append(tail)
    return " ".join(sentences)


def parse_findings(report: str) -> list[dict]:
    """Report text -> the findings it states (inverse of ``make_report``; tolerant of extra spaces)."""
    text = " ".join(report.lower().split())
    found = []
    for number, size, noun, region, side in _FINDING_RE.findall(text):
        if noun in _PLURAL_TO_SINGULAR:
            found.append(asdict(Finding(_PLURAL_TO_SINGULAR[noun], side, region, size, _NUMBER[number])))
    return found


def finding_f1(predicted_reports: Sequence[str], drawn_findings: Sequence[Sequence[dict | Finding]]) -> float:
    """Micro F1 over (finding, side, region, size, count) tuples, parsed from the predicted reports.

    Exact tuples: a right finding with a wrong count is both a false positive and a false negative.
    Normal images add nothing unless a finding is hallucinated (a false positive). Returns 1.0 when
    there is nothing to find and nothing was predicted.
    """
    if len(predicted_reports) != len(drawn_findings):
        raise ValueError(f"{len(predicted_reports)} reports but {len(drawn_findings)} findings lists")
    tp = fp = fn = 0
    for report, gold in zip(predicted_reports, drawn_findings, strict=True):
        pred = Counter(Finding(**f).key() for f in parse_findings(report))
        true = Counter((g if isinstance(g, Finding) else Finding(**g)).key() for g in gold)
        hit = sum((pred & true).values())
        tp += hit
        fp += sum(pred.values()) - hit
        fn += sum(true.values()) - hit
    if tp + fp + fn == 0:
        return 1.0
    return 2 * tp / (2 * tp + fp + fn)


# ----------------------------------------------------------------------------- sampling and drawing


def sample_case(index: int, seed: int, normal_fraction: float = 0.25) -> PhantomCase:
    """Case ``index`` of the phantom with ``seed`` (independent of how many cases are drawn)."""
    rng = np.random.default_rng([seed, index, 0])
    modality = MODALITIES[index % len(MODALITIES)]
    eye = "" if modality == "ct" else str(rng.choice(SIDES))
    findings = []
    if rng.random() >= normal_fraction:
        pair = FINDINGS[modality][int(rng.integers(2))]
        findings.append(
            Finding(
                finding=pair[0],
                side=str(rng.choice(SIDES)),
                region=str(rng.choice(REGIONS)),
                size=str(rng.choice(SIZES)),
                count=int(rng.choice(COUNTS)),
            )
        )
    return PhantomCase(index=index, modality=modality, eye=eye, findings=findings)


# Blob layouts (offsets in image fractions) per count: well apart even for large blobs.
_OFFSETS = {1: [(0.0, 0.0)], 2: [(-0.12, 0.0), (0.12, 0.0)], 3: [(-0.12, 0.07), (0.12, 0.07), (0.0, -0.09)]}
_RADIUS = {"small": 0.03, "large": 0.07}


def render(case: PhantomCase, seed: int, px: int = 128) -> Image.Image:
    """Draw ``case`` as an RGB image of ``px`` x ``px`` (deterministic for ``(case, seed)``)."""
    rng = np.random.default_rng([seed, case.index, 1])
    img = Image.new("RGB", (px, px), (0, 0, 0))
    draw = ImageDraw.Draw(img)

    def ellipse(cx: float, cy: float, rx: float, ry: float, fill: tuple[int, int, int]) -> None:
        draw.ellipse([(cx - rx) * px, (cy - ry) * px, (cx + rx) * px, (cy + ry) * px], fill=fill)

    def grey(v: float) -> tuple[int, int, int]:
        v = int(np.clip(v, 0, 255))
        return (v, v, v)

    def jit(spread: float) -> float:
        return float(rng.uniform(-spread, spread))

    if case.modality == "ct":
        ellipse(0.5, 0.5, 0.46 + jit(0.01), 0.40 + jit(0.01), grey(150 + jit(10)))
        for cx in (0.29, 0.71):
            ellipse(cx, 0.5, 0.18, 0.31, grey(95 + jit(8)))
        ellipse(0.5, 0.56, 0.07, 0.1, grey(140 + jit(8)))
        ellipse(0.5, 0.84, 0.04, 0.035, grey(200 + jit(10)))
        centres_x, centres_y = {"left": 0.29, "right": 0.71}, {"upper": 0.36, "lower": 0.64}
        colours = {"nodule": grey(245), "cyst": grey(10)}
    else:
        fundus = case.modality == "fundus"
        disc_x = 0.8 if case.eye == "right" else 0.2
        if fundus:
            ellipse(0.5, 0.5, 0.46, 0.46, (int(190 + jit(12)), int(80 + jit(8)), int(35 + jit(6))))
            vessel, disc, macula = (140, 35, 25), (250, 220, 140), (120, 45, 20)
        else:
            ellipse(0.5, 0.5, 0.46, 0.46, grey(90 + jit(8)))
            vessel, disc, macula = grey(170), grey(215), grey(55)
        for dy in (-0.25, -0.1, 0.1, 0.25):
            end_x = 0.5 + (0.5 - disc_x) * 0.9
            draw.line(
                [(disc_x * px, 0.5 * px), (end_x * px, (0.5 + dy + jit(0.03)) * px)], fill=vessel, width=1
            )
        ellipse(disc_x, 0.5, 0.075, 0.075, disc)
        ellipse(0.5, 0.5, 0.06, 0.06, macula)
        centres_x, centres_y = {"left": 0.32, "right": 0.68}, {"upper": 0.28, "lower": 0.72}
        colours = (
            {"exudate": (255, 245, 110), "hemorrhage": (60, 5, 5)}
            if fundus
            else {"leak": grey(255), "occlusion": grey(0)}
        )
    for f in case.findings:
        gx, gy = centres_x[f.side] + jit(0.02), centres_y[f.region] + jit(0.02)
        for dx, dy in _OFFSETS[f.count]:
            r = _RADIUS[f.size] * (1 + jit(0.08))
            ellipse(gx + dx, gy + dy, r, r, colours[f.finding])
    arr = np.asarray(img, dtype=np.float32) * float(rng.uniform(0.92, 1.08))
    arr += rng.normal(0.0, 5.0, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def iter_cases(n: int, seed: int, normal_fraction: float = 0.25) -> Iterator[PhantomCase]:
    for i in range(n):
        yield sample_case(i, seed, normal_fraction)


# ----------------------------------------------------------------------------- raw layouts


def prose(report: str, *, glue: bool = False) -> str:
    """A cleaned report as raw text: capitalised sentences, punctuation attached.

    ``glue`` writes ``"a.B c."`` (no space after a full stop), which ROCO's cleaning turns back
    into single-spaced ``" . "``.
    """
    sentences = [s.strip() for s in report.split(" .") if s.strip()]
    sentences = [s[0].upper() + s[1:] for s in sentences]
    return ("." if glue else ". ").join(sentences) + "."


def case_id(case: PhantomCase, layout: str) -> str:
    """The prepared ``id`` of a case in ``layout`` (file name where the layout keys by file)."""
    stem = f"phantom_{case.index:05d}"
    return f"{stem}.png" if layout in ("covctr", "pgross") else stem


def write_phantom(
    out: str | Path,
    *,
    layout: str = "covctr",
    n: int = 1200,
    seed: int = 0,
    image_px: int = 128,
    normal_fraction: float = 0.25,
) -> Path:
    """Write ``n`` phantom cases as raw data in ``layout`` under ``out``; returns ``out``.

    Besides the layout's own files it writes ``findings.json`` ({prepared id: [finding dicts]})
    and ``phantom.json`` (layout, n, seed, image_px, normal_fraction, generator version).
    """
    import pandas as pd

    if layout not in LAYOUTS:
        raise ValueError(f"unknown phantom layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if n < MIN_CASES:
        raise ValueError(f"n must be >= {MIN_CASES} so every split of every layout gets rows, got {n}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases = list(iter_cases(n, seed, normal_fraction))
    findings = {case_id(c, layout): [asdict(f) for f in c.findings] for c in cases}

    def image(c: PhantomCase) -> bytes:
        return png_bytes(render(c, seed, image_px))

    if layout == "covctr":
        (out / "images").mkdir(exist_ok=True)
        rows = []
        for c in cases:
            (out / "images" / case_id(c, layout)).write_bytes(image(c))
            rows.append(
                {
                    "image_id": case_id(c, layout),
                    "findings": "",
                    "terminologies": "",
                    "COVID": "0",
                    "impression": "",
                    "reports_En": prose(c.report),
                }
            )
        pd.DataFrame(rows).to_csv(out / "reports.csv", index=False)
    elif layout == "mmretinal":
        for modality, folder in MMRETINAL_FOLDER.items():
            (out / folder).mkdir(exist_ok=True)
            rows = []
            for c in (c for c in cases if c.modality == modality):
                (out / folder / f"{case_id(c, layout)}.png").write_bytes(image(c))
                row = {"Image_ID": case_id(c, layout), "en_caption": prose(c.report), "cn_caption": ""}
                if folder == "OCT":
                    row["is_multipic"] = "0"
                rows.append(row)
            pd.DataFrame(rows).to_csv(out / f"{folder}_translated_v1.csv", index=False)
    elif layout == "pgross":
        (out / "images").mkdir(exist_ok=True)
        captions = {}
        for c in cases:
            (out / "images" / case_id(c, layout)).write_bytes(image(c))
            captions[case_id(c, layout)] = f"Phantom {c.modality}: {prose(c.report)}"
        (out / "captions.json").write_text(json.dumps(captions, indent=1), encoding="utf-8")
    else:
        _write_roco(out, cases, seed, image)
    (out / "findings.json").write_text(json.dumps(findings, indent=1), encoding="utf-8")
    meta = {
        "generator_version": GENERATOR_VERSION,
        "layout": layout,
        "n": n,
        "seed": seed,
        "image_px": image_px,
        "normal_fraction": normal_fraction,
    }
    (out / "phantom.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    log.info("phantom: wrote %d %s-layout cases to %s", n, layout, out)
    return out


def _write_roco(out: Path, cases: list[PhantomCase], seed: int, image) -> None:
    """ROCO layout: parquet/{train,validation,test}-00000-of-00001.parquet, 80/10/10 seeded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (out / "parquet").mkdir(exist_ok=True)
    order = np.random.default_rng([seed, 2]).permutation(len(cases))
    n_val = n_test = max(1, len(cases) // 10)
    parts = {
        "validation": sorted(order[:n_val]),
        "test": sorted(order[n_val : n_val + n_test]),
        "train": sorted(order[n_val + n_test :]),
    }
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for name, members in parts.items():
        chosen = [cases[i] for i in members]
        table = pa.table(
            {
                "image": pa.array(
                    [{"bytes": image(c), "path": f"{case_id(c, 'roco')}.png"} for c in chosen], type=struct
                ),
                "image_id": pa.array([case_id(c, "roco") for c in chosen], pa.string()),
                "caption": pa.array([" " + prose(c.report, glue=True) for c in chosen], pa.string()),
            }
        )
        pq.write_table(table, out / "parquet" / f"{name}-00000-of-00001.parquet", row_group_size=256)


# ----------------------------------------------------------------------------- prepare glue


def read_phantom_meta(raw_dir: str | Path) -> dict:
    """``phantom.json`` of a raw phantom directory (written by ``write_phantom``)."""
    path = Path(raw_dir) / "phantom.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {raw_dir} is not a phantom raw directory; write one with "
            "`micar phantom --layout covctr --out DIR`"
        )
    meta = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("layout") not in LAYOUTS:
        raise ValueError(f"{path}: expected an object with 'layout' in {LAYOUTS}, got {meta!r}")
    return meta
