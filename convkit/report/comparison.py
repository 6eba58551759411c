"""The report's comparison section: a `convkit compare` result (compare.json) kept in the suite folder — in
``compare/`` (compare's default --out) or any ``compare*/`` folder — shown as its verdict, its checks and the
contact sheet of the worst flipped images. Read through convkit.artifacts (schema-checked); fields of the wrong
type are shown as not measured, never trusted."""

from __future__ import annotations

from pathlib import Path

from convkit import artifacts as A
from convkit.errors import ConvkitError
from convkit.text import cap

MAX_COMPARISONS = 10


def find(suite_dir: Path) -> list[Path]:
    """Return the compare.json files of ``suite_dir``: its own and those of its compare*/ folders (at most 10)."""
    found = [suite_dir / "compare.json"] + sorted(suite_dir.glob("compare*/compare.json"))
    return [p for p in found if p.is_file()][:MAX_COMPARISONS]


def blocks(suite_dir: Path) -> list[tuple]:
    """Return the report blocks of every comparison in ``suite_dir`` ([] when it holds none)."""
    out: list[tuple] = []
    for path in find(Path(suite_dir)):
        try:
            doc = A.read_artifact(path, "compare")
        except ConvkitError as exc:
            out += [("h2", f"Comparison `{path.parent.name}`"), ("p", f"not shown: {exc.message}")]
            continue
        out += one(doc or {}, path, Path(suite_dir))
    return out


def one(doc: dict, path: Path, suite_dir: Path) -> list[tuple]:
    """Return the blocks of one comparison document."""
    def text(value, limit=300):
        # backticks would open or close the code spans the text is set in: shown as quotes
        return cap(value, limit).replace("`", "'") if isinstance(value, (str, int, float)) else "not measured"

    base, new = (doc.get(k) if isinstance(doc.get(k), dict) else {} for k in ("base", "new"))
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    b = [("h2", f"Comparison: {text(doc.get('verdict'))} (`{path.parent.name}/`)"),
         ("p", f"New `{text(new.get('input'))}` ({text(new.get('variant'))}) against base "
               f"`{text(base.get('input'))}` ({text(base.get('variant'))}) on {text(data.get('n'))} images of "
               f"{text(data.get('dataset'))}; accuracy margin {text(doc.get('margin_points'))} points, paired tests "
               f"on the same images (`convkit compare`, docs/compare.md).")]
    checks = [c for c in doc.get("checks") or [] if isinstance(c, dict)] if isinstance(doc.get("checks"), list) else []
    if checks:
        b.append(("table", ["check", "verdict", "figures"],
                  [[text(c.get("name")), text(c.get("verdict")), text(c.get("summary"), 1000)] for c in checks]))
    sheet = path.parent / "flips.png"
    if sheet.is_file():
        b.append(("img", str(sheet.relative_to(suite_dir)), "Worst flipped images (base right, new wrong)"))
    return b
