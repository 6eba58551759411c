"""No file convkit reads makes it run code (issue 27, items 1 and 2), and a user model's export is whole or absent
(item 8, cleanup, full disk, messages).

The payloads are real: a model_source.json naming ``os:system`` with a command that creates a marker file, and
.pt2 archives whose pickled entries would create one when unpickled (checked here with plain torch.load /
torch.export.load, so the payload is known to work). The marker must never appear.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner

from convkit.cli import main
from convkit.trust import forbid_model_code

NETS = textwrap.dedent('''
    import sys
    import torch.nn as nn


    def build(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                             nn.Linear(16, num_classes))


    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build()

        def forward(self, x):
            y = self.net(x)
            return {"logits": y, "aux": y}


    def pair():
        return Pair()


    def quits():
        sys.exit(0)


    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build()

        def forward(self, x):
            y = self.net(x)
            return y * 2 if y.sum() > 0 else y  # control flow on the data: torch.export cannot trace it


    def data_dependent():
        return DataDependent()
''')
EXPORT = ["--dataset", "cifar10", "--sample", "--n-images", "40"]


def _cli(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res.exit_code, res.output


def _one_error_line(text: str, needle: str) -> None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], text
    assert "Traceback" not in text


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(autouse=True)
def _no_trust_left_over():
    yield
    forbid_model_code()  # --trust-model-source holds for the process: never for the next test


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """safety_nets (on sys.path), its weights, and one export of safety_nets:build with them."""
    root = tmp_path_factory.mktemp("safety")
    (root / "safety_nets.py").write_text(NETS)
    sys.path.insert(0, str(root))
    from safety_nets import build

    torch.manual_seed(0)
    net = build().eval()
    torch.save(net.state_dict(), root / "w.pt")
    out = root / "suite" / "mine"
    code, text = _cli("export", "--model", "safety_nets:build", "--weights", root / "w.pt", *EXPORT, "--out", out)
    assert code == 0, text
    yield {"root": root, "net": net, "weights": root / "w.pt", "out": out}
    sys.path.remove(str(root))


def _hostile_copy(src: Path, dst: Path, marker: Path) -> Path:
    """Copy an export folder and make its model_source.json name os:system(touch MARKER), the ONNX files' recorded
    checkpoint sha256 updated to match (as a sender controls the whole folder)."""
    shutil.copytree(src, dst)
    doc = json.loads((dst / "model_source.json").read_text())
    doc["source"].update(kind="factory", spec="os:system", kwargs={"command": f"touch {marker}"}, weights=None,
                         weights_sha256=None)
    (dst / "model_source.json").write_text(json.dumps(doc))
    sha = hashlib.sha256((dst / "model_source.json").read_bytes()).hexdigest()
    model = onnx.load(str(dst / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "checkpoint_sha256":
            prop.value = sha
    onnx.save(model, str(dst / "model.onnx"))
    for stale in ("reference_logits.pt", "eval.json"):
        (dst / stale).unlink(missing_ok=True)
    return dst


def test_a_folder_naming_os_system_runs_nothing_on_evaluate_or_report(tmp_path, nets):
    marker = tmp_path / "pwned"
    suite = tmp_path / "suite"
    evil = _hostile_copy(nets["out"], suite / "evil", marker)
    code, text = _cli("evaluate", evil, "--provider", "cpu", "--threads", "1", "--no-latency")
    assert not marker.exists()
    assert code == 0, text  # measured under ONNX Runtime; only the PyTorch reference is held back
    assert "no PyTorch reference" in text and "--trust-model-source" in text and "os:system" in text
    ev = json.loads((evil / "eval.json").read_text())
    assert ev["pytorch"] is None
    code, text = _cli("report", suite)
    assert not marker.exists()
    assert code == 0, text
    assert "--trust-model-source" in (suite / "report.md").read_text()


def test_code_runs_only_when_exported_here_or_trusted_on_the_command_line(tmp_path, nets, monkeypatch):
    folder = shutil.copytree(nets["out"], tmp_path / "mine")
    args = ["evaluate", folder, "--provider", "cpu", "--threads", "1", "--no-latency"]
    code, text = _cli(*args)  # this machine exported it: the reference is rebuilt as export built it
    assert code == 0 and json.loads((folder / "eval.json").read_text())["pytorch"] is not None, text
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path / "other-machine"))  # a folder received from elsewhere
    code, text = _cli(*args)
    assert code == 0 and "no PyTorch reference" in text, text
    assert json.loads((folder / "eval.json").read_text())["pytorch"] is None
    res = CliRunner().invoke(main, [str(a) for a in args] + ["--trust-model-source"])
    assert res.exit_code == 0, res.output
    assert "--trust-model-source: the code named by model_source.json files will be imported" in res.stderr
    ev = json.loads((folder / "eval.json").read_text())
    assert ev["pytorch"] is not None and 0 <= ev["pytorch"]["accuracy"] <= 1


def test_weights_hash_is_checked_before_the_factory_is_imported(tmp_path, nets):
    folder = shutil.copytree(nets["out"], tmp_path / "mine")
    doc = json.loads((folder / "model_source.json").read_text())
    doc["source"]["spec"] = "safety_nets_never_imported:build"  # importing it would fail differently
    doc["source"]["weights_sha256"] = "0" * 64
    (folder / "model_source.json").write_text(json.dumps(doc))
    from convkit.trust import allow_model_code
    from convkit.user_model import load_user_run

    allow_model_code()
    with pytest.raises(Exception) as err:
        load_user_run(folder)
    assert "changed since export" in str(err.value)


def test_unknown_source_kind_is_one_line_and_the_report_renders_the_rest(tmp_path, nets):
    suite = tmp_path / "suite"
    shutil.copytree(nets["out"], suite / "good")
    odd = shutil.copytree(nets["out"], suite / "odd")
    doc = json.loads((odd / "model_source.json").read_text())
    doc["source"]["kind"] = "wheel"
    (odd / "model_source.json").write_text(json.dumps(doc))
    code, text = _cli("evaluate", odd, "--provider", "cpu", "--no-latency")
    assert code == 2, text
    _one_error_line(text, "unknown model kind")
    code, text = _cli("report", suite)
    assert code == 0, text
    report = (suite / "report.md").read_text()
    assert "good" in report and "unknown model kind" in report


# ------------------------------------------------------------------------------------------------ .pt2 payloads
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, edit(info.filename, zin.read(info)))
    return dst


def _programs(tmp_path: Path, net, marker: Path) -> dict[str, Path]:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(net, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    good = tmp_path / "good.pt2"
    torch.export.save(program, good)
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    pickled, target = buf.getvalue(), {}

    def pickle_first_weight(name, data):
        if name.endswith("_weights_config.json"):
            cfg = json.loads(data)
            first = next(iter(cfg["config"].values()))
            first["use_pickle"] = True
            target["name"] = "data/weights/" + first["path_name"]
            return json.dumps(cfg).encode()
        return data

    flagged = _rewrite(good, tmp_path / "flagged.pt2", pickle_first_weight)
    weights = _rewrite(flagged, tmp_path / "weights.pt2", lambda n, d: pickled if n.endswith(target["name"]) else d)
    inputs = _rewrite(good, tmp_path / "inputs.pt2", lambda n, d: pickled if "/data/sample_inputs/" in n else d)
    return {"good": good, "use_pickle weight": weights, "pickled sample inputs": inputs}


@pytest.mark.parametrize("which", ["use_pickle weight", "pickled sample inputs"])
def test_a_pt2_whose_pickle_would_run_code_is_refused_before_loading(tmp_path, nets, which):
    marker = tmp_path / "pwned"
    programs = _programs(tmp_path, nets["net"], marker)
    with pytest.raises(Exception):  # the payload is real: torch's own loader runs it
        torch.export.load(programs[which])
    assert marker.exists()
    marker.unlink()
    code, text = _cli("export", "--program", programs[which], *EXPORT, "--out", tmp_path / "out")
    assert not marker.exists()
    assert code == 2, text
    _one_error_line(text, "it was not loaded")
    assert not (tmp_path / "out").exists()  # a failed export leaves no empty --out


def test_a_truncated_pt2_is_one_line(tmp_path, nets):
    good = _programs(tmp_path, nets["net"], tmp_path / "m")["good"]
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, text = _cli("export", "--program", cut, *EXPORT, "--out", tmp_path / "out")
    assert code == 2
    _one_error_line(text, "not a torch.export program")


# ------------------------------------------------------------------------------------- export: overwrite, cleanup
def test_a_second_export_to_the_same_out_needs_overwrite(tmp_path, nets):
    folder = shutil.copytree(nets["out"], tmp_path / "mine")
    before = _digests(folder)
    args = ["export", "--model", "safety_nets:build", "--weights", nets["weights"], *EXPORT, "--out", folder]
    code, text = _cli(*args)
    assert code == 2
    _one_error_line(text, "--overwrite")
    assert _digests(folder) == before
    code, text = _cli(*args, "--overwrite")
    assert code == 0, text


@pytest.mark.parametrize("factory, needle", [
    ("safety_nets:pair", "returns a dict (keys logits, aux)"),
    ("safety_nets:quits", "called sys.exit(0)"),
    ("safety_nets:data_dependent", "cannot export DataDependent"),  # one line, not torch's 90-line FX graph dump
])
def test_bad_factories_are_one_line_and_leave_no_folder(tmp_path, nets, factory, needle):
    out = tmp_path / "new" / "out"
    code, text = _cli("export", "--model", factory, *EXPORT, "--out", out)
    assert code == 2, text
    _one_error_line(text, needle)
    assert "--input-size" not in text.replace("--input-size is not the cause", "")
    assert not out.exists()


def test_a_full_disk_during_export_keeps_no_partial_export(tmp_path, nets, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(onnx, "save_model", full)
    out = tmp_path / "out"
    code, text = _cli("export", "--model", "safety_nets:build", "--weights", nets["weights"], *EXPORT, "--out", out)
    assert code == 2, text
    _one_error_line(text, "cannot write the export")
    assert not out.exists() or not any(out.iterdir())


def test_classes_beyond_the_metadata_cap_need_no_classes_flag_at_evaluate(tmp_path, nets):
    """3,000 class names of 100 characters (300 KB) are cut in the ONNX metadata (256 KB cap); evaluate takes them
    from model_source.json, which holds them all (before: the cut list was used and --classes was needed)."""
    from PIL import Image

    names = [f"{i:05d}-" + "n" * 94 for i in range(3000)]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    for k, idx in enumerate((0, 1500, 2999)):
        folder = tmp_path / "pics" / names[idx]
        folder.mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (32, 32), (80 * k, 40 * j, 0)).save(folder / f"{j}.png")
    from safety_nets import build

    torch.save(build(3000).state_dict(), tmp_path / "w.pt")
    out = tmp_path / "wide"
    code, text = _cli("export", "--model", "safety_nets:build", "--model-kwargs", '{"num_classes": 3000}',
                      "--weights", tmp_path / "w.pt", "--data",
                      tmp_path / "pics", "--classes", tmp_path / "classes.txt", "--input-size", "3,32,32", "--mean",
                      "0.5", "--std", "0.25", "--out", out)
    assert code == 0, text
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert len(meta["class_names"]) > 256 * 1024  # as written; readers cut it
    code, text = _cli("evaluate", out, "--provider", "cpu", "--threads", "1", "--no-latency")
    assert code in (0, 4), text  # 4: an untrained model's outputs may be degenerate; the classes are the point
    ev = json.loads((out / "eval.json").read_text())
    assert ev["model"]["class_names"] == names


def test_a_factory_without_weights_is_rebuilt_identically(nets):
    """No --weights: the factory's random initialisation is seeded, so evaluate's rebuilt reference is the model
    export exported (before: a different random model, and evaluate's gate failed on 70 % of the images)."""
    from convkit.user_model import build_model, source_from_flags

    source = source_from_flags("safety_nets:build", None, {"num_classes": 10}, None)
    a, b = build_model(source).state_dict(), build_model(source).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    build_model(source)
    assert torch.equal(torch.rand(1), before)  # the caller's random stream is left as it was
