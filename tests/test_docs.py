"""The documentation cannot drift from the code: every shell and Python block of README.md and docs/*.md runs here on
the embedded sample, in the order a reader follows (the guides that make files first, README last); a block that
needs a GPU, a container runtime, a cluster or the user's own data is marked `<!-- doc-test: skip (needs …) -->`
and its convkit command lines are still checked against the real CLI's commands and options. Links resolve, every
command of a transcript ran in a block, the module map lists exactly the modules there are, and README stays a
landing page.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The guides that make the files later blocks use come first (runs/seed-sample, model.onnx + pics/, resnet18.pt +
# shots/), README last: its examples reuse them, as its text says.
ORDER = ["docs/suite.md", "docs/evaluate.md", "docs/your-model.md", "docs/serving.md", "docs/robustness.md",
         "docs/report.md", "docs/scaling-out.md", "docs/exit-codes.md"]
SKIP = re.compile(r"<!-- doc-test: skip \((.+)\) -->")
ALLOWED_SKIP = ("needs ", "the quickstart itself")
README_MAX_LINES = 250
BLOCK_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def documents() -> list[str]:
    """Return README.md and every guide, in the order their blocks run."""
    guides = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))
    return [d for d in ORDER if d in guides] + [d for d in guides if d not in ORDER] + ["README.md"]


def blocks(doc: str) -> list[Block]:
    """Return the fenced blocks of ``doc`` with their language and skip mark."""
    lines = (ROOT / doc).read_text(encoding="utf-8").split("\n")
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        skip = SKIP.match(prev.strip())
        out.append(Block(doc, i + 1, m.group(1), "\n".join(lines[i + 1:j]), skip.group(1) if skip else None))
        i = j + 1
    return out


ALL = [b for d in documents() for b in blocks(d)]
RUNNABLE = [b for b in ALL if b.lang in ("sh", "python") and b.skip is None]


def command_lines(text: str) -> list[list[str]]:
    """Return the argument lists of the `convkit …` commands in shell text (continuations joined, comments cut)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.split("\n"):
        line = re.sub(r"^\$ ", "", line.strip())
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for k, w in enumerate(words):
            if w == "convkit" and k + 1 < len(words) and re.match(r"^[a-z][a-z-]*$", words[k + 1]):
                out.append(words[k + 1:])
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs")


_RAN: dict[str, str] = {}  # block text -> the block that ran it (README repeats its guides' examples word for word)


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block_runs(block: Block, workdir: Path):
    if block.text in _RAN:
        pytest.skip(f"the same commands ran as {_RAN[block.text]}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "CONVKIT_RUNS": str(workdir / "runs"), "PYTHONUNBUFFERED": "1"}
    cmd = (["bash", "-euo", "pipefail", "-c", block.text] if block.lang == "sh" else [sys.executable, "-c", block.text])
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, f"{block.id} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    _RAN[block.text] = block.id
    if os.environ.get("CONVKIT_DOC_OUTPUTS"):  # the transcripts in the guides are refreshed from these
        out = Path(os.environ["CONVKIT_DOC_OUTPUTS"]) / (block.id.replace("/", "_").replace(":", "_") + ".txt")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(proc.stdout + proc.stderr, encoding="utf-8")


def test_skips_say_why_and_their_commands_parse():
    from convkit.cli import main

    skipped = [b for b in ALL if b.skip is not None]
    assert skipped, "the container and GPU examples are marked"
    for b in skipped:
        assert b.skip.startswith(ALLOWED_SKIP), f"{b.id}: a skipped block says what it needs, got {b.skip!r}"
        for args in command_lines(b.text):
            check_cli(main, args, b.id)


def test_every_block_is_run_or_marked():
    for b in ALL:
        assert b.lang in ("sh", "python", "text", ""), f"{b.id}: fence it as sh, python or text (got {b.lang!r})"
        if b.lang == "":
            pytest.fail(f"{b.id}: an unlabelled block; label it sh, python or text")


def test_transcript_commands_ran_in_a_block():
    """A `$ convkit …` line shown with its output is one a runnable block of the same document executed."""
    for doc in documents():
        ran = {" ".join(a) for b in blocks(doc) if b.lang == "sh" for a in command_lines(b.text)}
        for b in blocks(doc):
            if b.lang == "text":
                for args in command_lines("\n".join(x for x in b.text.split("\n") if x.startswith("$ "))):
                    assert " ".join(args) in ran, f"{b.id}: `convkit {' '.join(args)}` is shown but run by no block"


def check_cli(main, args: list[str], where: str) -> None:
    """Assert that ``args`` names a convkit command and only options it declares."""
    import click

    ctx = click.Context(main)
    cmd = main.get_command(ctx, args[0])
    assert cmd is not None, f"{where}: `convkit {args[0]}` is not a command"
    known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
    for word in args[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{where}: `convkit {args[0]}` has no option {word.split('=')[0]}"


def test_runnable_commands_use_real_options():
    from convkit.cli import main

    for b in RUNNABLE:
        if b.lang == "sh":
            for args in command_lines(b.text):
                check_cli(main, args, b.id)


def slug(heading: str) -> str:
    """Return GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_resolve():
    for doc in documents() + ["docker/README.md"]:
        path = ROOT / doc
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            assert dest.exists(), f"{doc}: link to {target} points at nothing"
            if anchor and dest.suffix == ".md":
                heads = {slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)}
                assert anchor in heads, f"{doc}: link to {target}: no such heading"


def listed_modules() -> set[str]:
    """Return the module paths docs/layout.md's map lists (e.g. "evaluate/serving/sut.py")."""
    tree = next(b for b in blocks("docs/layout.md") if b.lang == "text").text
    stack: list[tuple[int, str]] = []
    out = set()
    for line in tree.split("\n"):
        name = line.strip().split()[0] if line.strip() else ""
        if not name:
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        stack = [(d, n) for d, n in stack if d < depth]
        if name.endswith("/"):
            stack.append((depth, name))
        elif name.endswith(".py"):
            out.add("".join(n for _, n in stack) + name)
    return out


def test_module_map_lists_every_module():
    packages = ("convkit", "train", "export", "evaluate")
    actual = {str(p.relative_to(ROOT)) for pkg in packages for p in (ROOT / pkg).rglob("*.py")
              if p.name != "__init__.py" and "sample" not in p.parts}
    listed = listed_modules()
    assert sorted(actual - listed) == [], "modules missing from docs/layout.md"
    assert sorted(listed - actual) == [], "docs/layout.md lists modules that do not exist"


def test_readme_is_a_landing_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into a guide under docs/"
