"""eval.json as one typed object: ``EvalResult`` is assembled once by ``run.evaluate_model``, written by its
``to_json()`` (through convkit.artifacts, with the schema tag ``convkit.eval/1``) and read back by ``read_eval``.
Every renderer — the terminal line, eval.md, the serving section, the recommendation — takes the object.

The sections inside stay the JSON layout eval.json has always had (the README and convkit/report read them), so
the file written now is the file the older readers read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EvalResult:
    """One evaluation: what was measured (``model``, ``variants``, ``dataset``, ``providers``), the figures
    (``pytorch``, ``accuracy``, ``latency``, ``robustness``, ``serving``), the verdicts (``gate``,
    ``preprocessing``, ``recommendation``), where the numbers came from (``provenance``, ``method``,
    ``hardware``) and the suite-summary fields (``summary``, ``summary_columns``)."""

    created: str
    input: str
    run_dir: str | None
    model: dict
    variants: dict[str, dict]
    parameters: int | None
    dataset: dict
    providers: dict
    pytorch: dict | None
    accuracy: list[dict]
    latency: list[dict]
    summary: dict
    summary_columns: list[list[str]]
    gate: dict
    method: dict
    hardware: dict
    notes: list[str] = field(default_factory=list)
    preprocessing: dict | None = None
    robustness: dict | None = None
    provenance: dict | None = None
    serving: dict | None = None
    recommendation: dict | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def gate_passed(self) -> bool | None:
        """Return the accuracy gate's verdict: True, False, or None when there was no PyTorch reference."""
        return self.gate.get("passed")

    @property
    def degenerate(self) -> list[str]:
        """Return "<precision> on <provider>: <why>" for every measured file whose outputs were degenerate."""
        return [f"{a['precision']} on {a['provider']}: {a['degenerate']}" for a in self.accuracy if a.get("degenerate")]

    def to_json(self) -> dict:
        """Return eval.json's document (without its schema tag, which convkit.artifacts adds); sections never
        measured are left out, as before."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in doc.items() if v is not None or k in REQUIRED}

    @classmethod
    def from_json(cls, doc: dict) -> EvalResult:
        """Return the EvalResult of an eval.json document (keys this version does not know are ignored; a missing
        section reads as its empty value)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        for name in REQUIRED:
            values.setdefault(name, EMPTY.get(name))
        return cls(**values)


# always written, even when None ("pytorch": null says there was no reference; "run_dir": null a foreign file)
REQUIRED = ("created", "input", "run_dir", "model", "variants", "parameters", "dataset", "providers", "pytorch",
            "accuracy", "latency", "summary", "summary_columns", "gate", "method", "hardware")
EMPTY = {"created": "", "input": "", "model": {}, "variants": {}, "dataset": {}, "providers": {}, "accuracy": [],
         "latency": [], "summary": {}, "summary_columns": [], "gate": {}, "method": {}, "hardware": {}}


def read_eval(path: Path | str) -> EvalResult | None:
    """Return the EvalResult of the eval.json at ``path``, None when there is none (ConvkitError, exit 2, for a
    file of another schema or unreadable JSON: convkit.artifacts.read_artifact)."""
    from convkit.artifacts import read_artifact  # torch comes with it: `convkit --help` never loads this

    doc = read_artifact(Path(path), "eval")
    return None if doc is None else EvalResult.from_json(doc)
