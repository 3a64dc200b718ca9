"""Every example in the README, CONTRIBUTING.md and docs/*.md runs as written.

Each ```python block runs in a subprocess of this interpreter, and each ```bash / ```sh block
(```console: its ``$ `` lines) in bash, with this interpreter's bin folder first on PATH (so
``se-multi`` and ``python`` are the project's). A block runs in a fresh scratch folder holding
what the pages assume a reader has: an image ``cat.jpg`` and a folder ``photos/`` of three
images; CONTRIBUTING.md's blocks run at the repository's root, which they are about. The
environment sets ``SE_MULTI_BACKEND=numpy`` (what ``backend="auto"`` resolves to: the pages
say so) and puts the repository's root on ``PYTHONPATH`` (an example may import
``tests.broken_backends``). A block that exits non-zero fails, naming its page and line.

A block may be marked on the line before it (blank lines between are allowed):

- ``<!-- skip: REASON -->``: it needs what a test machine lacks (a GPU, a network, Apple
  silicon, a CPU feature) or takes minutes; reported as skipped with REASON.
- ``<!-- ci: REASON -->``: a command ``.ci/run`` runs; checked textually, line by line, against
  ``.ci/run`` instead of being run.

The README's two set-up commands are checked textually too (byte for byte, and against what
``.ci/run`` installs and runs): running them would reinstall the environment.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
CI_SCRIPT = ROOT / ".ci" / "run"
#: fence language -> how the block runs
RUNNERS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "bash"}
#: the README's set-up commands, exactly as a reader copies them
README_MAIN_COMMAND = ('python3 -m venv .venv && . .venv/bin/activate && pip install -e '
                       '".[torch,mlx,onnx,openvino,bench]" && se-multi bench')
README_TEST_COMMAND = '. .venv/bin/activate && pip install -e ".[all]" && python -m pytest -q'
SETUP_COMMANDS = (README_MAIN_COMMAND, README_TEST_COMMAND)
#: a block's limit; the whole set runs in well under a minute on 2 cores
TIMEOUT_S = 180

_FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*(skip|ci):\s*(.+?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # the fence's line, 1-based
    lang: str
    code: str
    marker: tuple[str, str] | None  # ("skip" | "ci", reason)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, each with the marker on the line before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise ValueError(f"{page.relative_to(ROOT)}:{start + 1}: a code block is never closed")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = _MARKER.match(lines[k].strip()) if k >= 0 else None
        found.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                           (marker.group(1), marker.group(2)) if marker else None))
        i = j + 1
    return found


def runnable_blocks() -> list[Block]:
    out = []
    for page in PAGES:
        for block in blocks_of(page):
            if block.lang in RUNNERS and not (page.name == "README.md" and block.code.strip() in SETUP_COMMANDS):
                out.append(block)
    return out


BLOCKS = runnable_blocks()


def _image(path: Path, seed: int, size=(120, 160)) -> None:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    """What the pages assume a reader has: cat.jpg and photos/ (three images)."""
    base = tmp_path_factory.mktemp("docs-fixtures")
    _image(base / "cat.jpg", 0)
    (base / "photos").mkdir()
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        _image(base / "photos" / name, i + 1)
    return base


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["SE_MULTI_BACKEND"] = "numpy"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["HF_HUB_OFFLINE"] = "1"  # an example that needed the network would fail here, not hang
    env.pop("COLUMNS", None)
    return env


def _ci_commands() -> list[str]:
    """The commands of .ci/run, one per line, comments dropped."""
    out = []
    for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _pip_targets(command: str) -> set[str] | None:
    """What the ``pip install`` of a command (``a && pip install ... && b``) installs (None: none)."""
    for part in command.split("&&"):
        words = shlex.split(part)
        if "pip" in words and "install" in words:
            return {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
    return None


def _extras(target: str) -> set[str]:
    m = re.fullmatch(r"\.\[([\w,-]+)\]", target)
    return set(m.group(1).split(",")) if m else set()


def _ci_runs(command: str, ci: list[str]) -> bool:
    targets = _pip_targets(command)
    if targets is None:
        return command in ci
    return any((t := _pip_targets(c)) is not None and targets <= t for c in ci)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_example_runs(block: Block, fixtures: Path, tmp_path: Path):
    if block.marker and block.marker[0] == "skip":
        pytest.skip(f"{block.id}: {block.marker[1]}")
    if block.marker and block.marker[0] == "ci":
        ci = _ci_commands()
        for line in block.code.splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                assert _ci_runs(command, ci), f"{block.id}: .ci/run does not run {command!r}"
        return
    if block.page.name == "CONTRIBUTING.md":
        cwd = ROOT
    else:
        cwd = tmp_path / "work"
        shutil.copytree(fixtures, cwd)
    code = block.code
    if block.lang == "console":
        code = "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ ")) + "\n"
    if RUNNERS[block.lang] == "python":
        script = tmp_path / "example.py"
        script.write_text(code, encoding="utf-8")
        argv = [sys.executable, str(script)]
    else:
        script = tmp_path / "example.sh"
        script.write_text("set -euo pipefail\n" + code, encoding="utf-8")
        argv = ["bash", str(script)]
    try:
        done = subprocess.run(argv, cwd=cwd, env=_environment(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: the example ran past {TIMEOUT_S} s; keep examples small")
    assert done.returncode == 0, (
        f"{block.id}: the {block.lang} example exited {done.returncode}\n--- example\n{block.code}"
        f"--- stdout (tail)\n{done.stdout[-3000:]}\n--- stderr (tail)\n{done.stderr[-3000:]}")


def test_readme_setup_commands_are_as_written_and_what_ci_runs():
    readme = [b.code.strip() for b in blocks_of(ROOT / "README.md") if b.lang in RUNNERS]
    for command in SETUP_COMMANDS:
        assert command in readme, f"README.md no longer has the set-up command {command!r}"
    ci = _ci_commands()
    # the test command: CI installs every extra it names, and runs the same pytest command
    (test_target,) = _pip_targets(README_TEST_COMMAND)
    test_extras = _extras(test_target)
    ci_extras = set().union(*(_extras(t) for c in ci if (ts := _pip_targets(c)) for t in ts))
    assert test_extras <= ci_extras, f".ci/run installs .[{','.join(sorted(ci_extras))}], not {test_extras}"
    assert "python -m pytest -q" in ci, ".ci/run does not run the README's test command"
    # the main job: every extra it names exists and is in `all` (what CI installs), and
    # `se-multi bench` is a command
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    (all_extras,) = extras["all"]  # "se-multi[torch,mlx,...]"
    in_all = _extras("." + all_extras.removeprefix(project["name"]))
    (main_target,) = _pip_targets(README_MAIN_COMMAND)
    main_extras = _extras(main_target)
    assert main_extras <= set(extras) and main_extras <= in_all, main_extras - in_all
    from se_multi.cli import COMMANDS

    assert README_MAIN_COMMAND.endswith("&& se-multi bench") and "bench" in COMMANDS


def test_markers_are_well_formed():
    """A marker names its reason and sits on a block that runs; a block no runner takes
    (text, toml) is never marked, so no marker can hide an example."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for line in text.splitlines():
            if line.strip().startswith("<!--") and re.match(r"<!--\s*(skip|ci)\b", line.strip()):
                assert _MARKER.match(line.strip()), f"{page.name}: malformed marker {line!r}"
        for block in blocks_of(page):
            if block.marker:
                assert block.lang in RUNNERS, f"{block.id}: a marker on a {block.lang or 'plain'} block"
