"""Training runs: artifacts, determinism, resume equivalence, divergence handling, torch.compile smoke."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

import convkit.train.run as run_mod
from convkit.errors import ConvkitError, TrainingDiverged
from convkit.train import TrainOverrides, resolve_config, train_experiment
from convkit.train.loop import EpochStats


def _cfg(tmp_path, experiment="t1-fcn", **kw):
    kw = {"epochs": 1, "device": "cpu", "sample": True, "out": tmp_path, "compile": False, **kw}
    return resolve_config(experiment, TrainOverrides(**kw))


def test_one_epoch_run_writes_every_artifact(tmp_path):
    cfg = _cfg(tmp_path, "t5-custom-pooling", recipe="seed", batch_size=64)
    m = train_experiment(cfg, quiet=True)
    run = tmp_path / "seed-sample" / "t5-custom-pooling"
    assert {p.name for p in run.iterdir()} == {"config.json", "history.csv", "grad_norms.csv", "metrics.json",
                                                "checkpoint.pt"}
    assert m["parameters"] == 268_650 and 0.0 <= m["test_acc"] <= 1.0
    # 1000 sample images, batch 64: the seed protocol learns something in one epoch (chance is 0.10)
    assert m["train_acc"] > 0.1 or m["test_acc"] > 0.12
    config = json.loads((run / "config.json").read_text())
    assert config["environment"]["torch"] == torch.__version__
    assert config["data_checksum"] and config["config"]["recipe"]["name"] == "seed"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    with open(run / "grad_norms.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["parameter"] for r in rows} >= {"0.weight", "7.weight"}
    assert all(float(r["grad_norm"]) >= 0 for r in rows)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))


def _history(run_dir):
    with open(run_dir / "history.csv") as fh:
        return [{k: v for k, v in r.items() if not k.endswith("time_s") and k != "samples_per_s"}
                for r in csv.DictReader(fh)]


def test_same_seed_same_metrics_on_cpu(tmp_path):
    a = train_experiment(_cfg(tmp_path / "a", "t1-simple-cnn", epochs=2, batch_size=128), quiet=True)
    b = train_experiment(_cfg(tmp_path / "b", "t1-simple-cnn", epochs=2, batch_size=128), quiet=True)
    c = train_experiment(_cfg(tmp_path / "c", "t1-simple-cnn", epochs=2, batch_size=128, seed=1), quiet=True)
    assert _history(tmp_path / "a/seed-sample/t1-simple-cnn") == _history(tmp_path / "b/seed-sample/t1-simple-cnn")
    assert a["test_loss"] == b["test_loss"] and a["test_loss"] != c["test_loss"]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch):
    kw = {"epochs": 3, "batch_size": 128}
    full = train_experiment(_cfg(tmp_path / "full", "t1-simple-cnn", **kw), quiet=True)

    real = run_mod.train_epoch
    calls = {"n": 0}

    def interrupt_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "train_epoch", interrupt_in_epoch_2)
    cfg = _cfg(tmp_path / "cut", "t1-simple-cnn", **kw)
    with pytest.raises(KeyboardInterrupt):
        train_experiment(cfg, quiet=True)
    assert torch.load(f"{cfg.run_dir}/checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(run_mod, "train_epoch", real)
    resumed = train_experiment(cfg, resume=True, quiet=True)
    assert resumed["resumed_from_epoch"] == 1
    assert _history(tmp_path / "full/seed-sample/t1-simple-cnn") == _history(tmp_path / "cut/seed-sample/t1-simple-cnn")
    assert resumed["test_acc"] == full["test_acc"] and resumed["test_loss"] == full["test_loss"]
    a = torch.load(tmp_path / "full/seed-sample/t1-simple-cnn/checkpoint.pt", weights_only=True)["model"]
    b = torch.load(f"{cfg.run_dir}/checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(tmp_path):
    cfg = _cfg(tmp_path, "t1-fcn")
    train_experiment(cfg, quiet=True)
    before = {p.name: p.read_bytes() for p in Path(cfg.run_dir).iterdir()}
    with pytest.raises(ConvkitError, match="differs in.*seed"):
        train_experiment(_cfg(tmp_path, "t1-fcn", seed=5), resume=True, quiet=True)
    assert {p.name: p.read_bytes() for p in Path(cfg.run_dir).iterdir()} == before  # nothing lost


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = run_mod.train_epoch
    calls = {"n": 0}

    def nan_in_epoch_2(*a, **k):
        calls["n"] += 1
        stats = real(*a, **k)
        return EpochStats(float("nan"), stats.acc, stats.samples, stats.seconds) if calls["n"] == 2 else stats

    monkeypatch.setattr(run_mod, "train_epoch", nan_in_epoch_2)
    cfg = _cfg(tmp_path, "t1-fcn", epochs=3)
    with pytest.raises(TrainingDiverged, match="epoch 2.*epoch 1") as info:
        train_experiment(cfg, quiet=True)
    assert info.value.exit_code == 3
    assert torch.load(f"{cfg.run_dir}/checkpoint.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("kw, match", [
    ({"epochs": 0}, "--epochs must be positive"),
    ({"batch_size": -1}, "--batch-size must be positive"),
    ({"lr": 0.0}, "--lr must be positive"),
    ({"recipe": "slow"}, "unknown recipe"),
    ({"device": "cuda"}, "CUDA is not available"),
])
def test_bad_config_values(tmp_path, kw, match):
    if kw.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConvkitError, match=match):
        resolve_config("t1-fcn", TrainOverrides(**{"out": tmp_path, "device": "cpu", **kw}))


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConvkitError, match="cannot create output directory"):
        train_experiment(_cfg(blocker), quiet=True)


def test_torch_compile_smoke(tmp_path):
    m = train_experiment(_cfg(tmp_path, "t1-fcn", compile=True), quiet=True)
    assert m["compile_time_s"] > 0 and 0 <= m["test_acc"] <= 1
    ckpt = torch.load(tmp_path / "seed-sample/t1-fcn/checkpoint.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])


def test_compile_model_keeps_compiling_past_dynamo_cache_limit():
    # Every seed model is an nn.Sequential; without a reset dynamo stops compiling after 8 of them.
    from torch._dynamo.utils import counters

    from convkit.compilation import compile_model
    from convkit.models import create_model

    graphs = []
    for i in range(10):
        compiled = compile_model(create_model("fcn_mnist"))
        compiled(torch.randn(2 + i, 1, 28, 28))
        graphs.append(counters["stats"]["unique_graphs"])
    assert all(b > a for a, b in zip(graphs, graphs[1:])), graphs


def test_grad_norm_tracker_samples_every_nth_step():
    from convkit.train.loop import GradNormTracker

    model = torch.nn.Linear(2, 1, bias=False)
    tracker = GradNormTracker(model, every=3)
    norms = [1.0, 2.0, 2.0, 8.0, 5.0, 5.0, 4.0]  # steps 0, 3, 6 sampled: mean 13/3 (all seven would give 3.857)
    for norm in norms:
        model.weight.grad = torch.full_like(model.weight, norm / 2 ** 0.5)  # L2 norm of [g, g] is g·sqrt(2)
        tracker.update()
    assert tracker.epoch_means()["weight"] == pytest.approx(13 / 3)
    for norm in norms[:2]:  # the next epoch starts sampling at its own step 0 again
        model.weight.grad = torch.full_like(model.weight, norm / 2 ** 0.5)
        tracker.update()
    assert tracker.epoch_means()["weight"] == pytest.approx(1.0)
    assert tracker.epoch_means() == {}
    with pytest.raises(ValueError):
        GradNormTracker(model, every=0)


def test_grad_norm_every_is_recorded_in_the_config(tmp_path):
    cfg = _cfg(tmp_path, "t1-fcn")
    assert cfg.grad_norm_every == 10
    train_experiment(cfg, quiet=True)
    config = json.loads((Path(cfg.run_dir) / "config.json").read_text())
    assert config["config"]["grad_norm_every"] == 10


def test_adam_is_fused_on_cuda_only(tmp_path):
    import dataclasses

    from convkit.models import create_model
    from convkit.train.optim import build_optimizer

    model = create_model("fcn_mnist")
    for recipe in ("seed", "fast"):  # adam, adamw
        cfg = _cfg(tmp_path, "t1-fcn", recipe=recipe)
        cpu_opt, _ = build_optimizer(model, cfg, steps_per_epoch=4)
        assert not cpu_opt.defaults.get("fused")  # the CPU keeps the default (foreach/for-loop) update
        # The config is all build_optimizer looks at: a CUDA config asks for the fused update.
        cuda_opt, _ = build_optimizer(model, dataclasses.replace(cfg, device="cuda"), steps_per_epoch=4)
        assert cuda_opt.defaults["fused"] is True


def test_evaluate_pads_the_tail_and_counts_only_real_rows():
    from convkit.data.loader import DeviceLoader, LoaderOptions
    from convkit.train.loop import evaluate

    torch.manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(50) % 10
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 10)).eval()
    shapes = []
    model.register_forward_pre_hook(lambda mod, args: shapes.append(args[0].shape[0]))
    loader = DeviceLoader(x, y, 16, (0.5,) * 3, (0.25,) * 3, torch.device("cpu"),
                          LoaderOptions(train=False, channels_last=True))
    stats = evaluate(model, loader, "none")
    assert shapes == [16, 16, 16, 16]  # 50 = 3×16 + 2: the tail of 2 ran padded to 16
    with torch.no_grad():
        logits = model(loader.normalize(x))
    assert stats.samples == 50
    assert stats.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert stats.acc == (logits.argmax(1) == y).sum().item() / 50


def test_compiled_run_never_recompiles_after_warm_up(tmp_path, monkeypatch):
    # The CUDA path (compile, channels-last, bf16 autocast) on the CPU, with the aot_eager backend (no C++
    # toolchain): after warm-up, two epochs and their evaluations with a ragged tail add no graph.
    from torch._dynamo.utils import counters

    from convkit.compilation import compile_model

    monkeypatch.setattr(run_mod, "compile_model", lambda m: compile_model(m, backend="aot_eager"))
    real_warm_up = run_mod.warm_up
    seen = {}

    def warm_up_then_forbid_recompiles(*a, **k):
        seconds = real_warm_up(*a, **k)
        seen["after_warm_up"] = counters["stats"]["unique_graphs"]
        monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
        return seconds

    monkeypatch.setattr(run_mod, "warm_up", warm_up_then_forbid_recompiles)
    # t2-residual-cnn has BatchNorm (train and eval differ); 500 test images = 5×96 + 20: a ragged tail.
    cfg = _cfg(tmp_path, "t2-residual-cnn", epochs=2, batch_size=96, compile=True)
    cfg = dataclasses.replace(cfg, channels_last=True, amp="bf16")
    before = counters["stats"]["unique_graphs"]
    m = train_experiment(cfg, quiet=True)
    assert seen["after_warm_up"] - before == 2  # one train graph, one eval graph
    assert counters["stats"]["unique_graphs"] == seen["after_warm_up"]
    assert m["compile_time_s"] > 0 and 0 <= m["test_acc"] <= 1


def test_a_compiler_failure_falls_back_to_eager_and_says_so(tmp_path, monkeypatch):
    """A dynamo/inductor error during warm-up does not end the run: it trains eagerly, metrics say why."""
    import convkit.train.run as run_mod

    def broken_compile(model, **kw):
        def fail(*a, **k):
            raise RuntimeError("InductorError: C compiler not found\nlong detail")
        return fail

    monkeypatch.setattr(run_mod, "compile_model", broken_compile)
    m = train_experiment(_cfg(tmp_path, "t1-fcn", compile=True), quiet=True)
    assert m["execution"] == "eager (compile failed)" and m["compile_time_s"] == 0.0
    assert m["compile_error"] == "RuntimeError: InductorError: C compiler not found"
    assert m["summary"]["execution"] == "eager (compile failed)" and 0 < m["test_acc"] <= 1


def test_final_fp32_accuracy_is_recorded(tmp_path):
    """On the CPU training runs in fp32, so the final fp32 pass reproduces the last epoch's test figures."""
    m = train_experiment(_cfg(tmp_path, "t1-fcn"), quiet=True)
    assert m["test_acc_fp32"] == pytest.approx(m["test_acc"]) and m["test_loss_fp32"] == pytest.approx(m["test_loss"])
    assert m["execution"] == "eager" and "fp32" in m["test_acc_note"]


def test_checkpoints_are_written_first_last_and_by_interval(tmp_path, monkeypatch):
    """Not every epoch: after the first, the last, and when the interval passed; a resume from the newest one
    still ends exactly where an uninterrupted run ends."""
    import convkit.train.run as run_mod

    saved = []
    real_save = run_mod.save_checkpoint

    def spy(run_dir, **kw):
        saved.append(kw["record"].epoch)
        return real_save(run_dir, **kw)

    monkeypatch.setattr(run_mod, "save_checkpoint", spy)
    monkeypatch.setattr(run_mod, "CHECKPOINT_INTERVAL_S", 1e9)
    train_experiment(_cfg(tmp_path, "t1-fcn", epochs=4, batch_size=256), quiet=True)
    assert saved == [1, 4]
    saved.clear()
    monkeypatch.setattr(run_mod, "CHECKPOINT_INTERVAL_S", 0.0)
    train_experiment(_cfg(tmp_path / "b", "t1-fcn", epochs=3, batch_size=256), quiet=True)
    assert saved == [1, 2, 3]


def test_max_images_caps_matching_experiments_and_spreads_over_classes():
    from convkit.data.load import load_dataset

    caps = TrainOverrides(device="cpu", sample=True, max_images=[("t6-wide", 120), ("t6-*", 200)])
    cfgs = {n: resolve_config(n, caps) for n in ("t6-wide", "t6-bottleneck", "t1-fcn")}
    assert [cfgs[n].max_images for n in ("t6-wide", "t6-bottleneck", "t1-fcn")] == [120, 200, None]
    data = load_dataset("cifar10", sample=True, max_images=120)
    assert len(data.train_images) == len(data.train_labels) == 120 and len(data.test_images) == 120
    assert len(set(data.train_labels.tolist())) == 10  # evenly spaced through the split: every class kept
    with pytest.raises(ConvkitError):
        resolve_config("t1-fcn", TrainOverrides(device="cpu", max_images=0))


def test_config_records_the_augmentation_training_used(tmp_path):
    # The fast recipe says crop 4 + flip, but MNIST trains with a 2-pixel crop and no flip: record what ran.
    mnist = resolve_config("t1-fcn", TrainOverrides(epochs=1, device="cpu", sample=True, out=tmp_path, compile=False))
    assert mnist.recipe.crop_pad == 4 and mnist.recipe.flip
    assert mnist.to_dict()["augmentation"] == {"crop_pad": 2, "flip": False}
    train_experiment(mnist, quiet=True)
    for name in ("config.json", "metrics.json"):  # both files say what training did, beside the recipe's values
        doc = json.loads((Path(mnist.run_dir) / name).read_text())
        assert doc["config"]["augmentation"] == {"crop_pad": 2, "flip": False}, name
        assert doc["config"]["recipe"]["crop_pad"] == 4
    cifar = resolve_config("t5-custom-conv", TrainOverrides(device="cpu", sample=True, out=tmp_path))
    assert cifar.to_dict()["augmentation"] == {"crop_pad": cifar.recipe.crop_pad, "flip": cifar.recipe.flip}
    seed = resolve_config("t1-fcn", TrainOverrides(recipe="seed", device="cpu", sample=True, out=tmp_path))
    assert seed.to_dict()["augmentation"] == {"crop_pad": 0, "flip": False}
