"""Every command the README shows exists and parses with the real CLI.

What each command does is exercised by the tests of its module (prepare on every layout, train,
evaluate, generate, score, import-reference, demo); this test keeps the README from drifting:
a renamed flag or subcommand fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from micar.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def code_lines() -> list[str]:
    """Shell lines of the README's ```bash blocks, continuations joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


MICAR = [line for line in code_lines() if line.startswith("micar ")]


def test_readme_shows_the_two_commands_first():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    assert "make demo" in first_block and "make test" in first_block
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_readme_has_micar_commands():
    subcommands = {line.split()[1] for line in MICAR}
    assert {"prepare", "train", "evaluate", "generate", "score", "import-reference"} <= subcommands


@pytest.mark.parametrize("line", MICAR)
def test_readme_command_parses(line):
    argv = shlex.split(line.replace("<run>", "demo"))[1:]
    args = build_parser().parse_args(argv)
    assert callable(args.func)


@pytest.mark.parametrize("path", sorted(set(re.findall(r"tune_configs/[\w-]+\.yaml", README))))
def test_readme_configs_exist(path):
    assert (REPO / path).is_file()
