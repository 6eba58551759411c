"""Running a suite's experiments several at a time: local processes (one per device slot), or tasks on Ray.

Both are executors for ``convkit.pipeline.train_all``: they take the plan and the experiment names and
return one ``run_experiment`` result per experiment, so the summary is the same however the suite ran.

* Local (``--devices cuda:0,cuda:1``, ``--jobs N``): plain processes, one per device slot (``N`` slots per
  device), each with its own CUDA context, each running its share of the experiments one after another.
  Plain processes rather than a local Ray instance: nothing to install or start, the run folders are on the
  local disk already, and a crashed process only fails its own experiments.
* Ray (``--ray [ADDRESS]``): one task per experiment (``num_gpus`` 1, or 1/N with ``--jobs N``), retried once
  when its worker dies; the task trains into a temporary folder on its node and ships the run folder back as
  a tar archive, so no shared file system is assumed.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import multiprocessing
import os
import shutil
import socket
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from convkit.errors import ConvkitError, failure_of, first_line
from convkit.models import get_model_config
from convkit.pipeline import SuitePlan, record_failure, run_experiment
from convkit.suite import find_experiment, split_seeded
from convkit.train.config import check_device


def parse_devices(text: str | None) -> list[str]:
    """Return the device list of ``--devices`` ("cuda:0,cuda:1", "cpu,cpu"); default: every visible GPU."""
    if not text:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise ConvkitError(f"--devices {text!r} lists no device; use e.g. cuda:0,cuda:1 or cpu")
    for d in devices:
        try:
            check_device(d)  # as `train --device` does: a malformed or unusable device is refused here
        except ConvkitError as exc:
            raise ConvkitError(f"--devices: {exc.message}") from None
    return devices


def expected_cost(name: str) -> float:
    """Return a relative cost estimate of one experiment: the study's time where known, else its parameters."""
    exp = find_experiment(split_seeded(name)[0])
    if exp is not None and exp.seed is not None and exp.seed.time_s:
        return float(exp.seed.time_s)
    shape = get_model_config(exp.model).input_shape if exp else (1, 1, 1)
    return float(shape[0] * shape[1] * shape[2])


def balance(names: list[str], slots: int) -> list[list[str]]:
    """Return ``slots`` lists of experiments, longest first, each given to the least loaded slot (LPT)."""
    loads, groups = [0.0] * slots, [[] for _ in range(slots)]
    for name in sorted(names, key=expected_cost, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(name)
        loads[i] += expected_cost(name)
    return groups


def _run_group(plan: SuitePlan, names: list[str], device: str) -> list[dict]:
    """Run ``names`` one after another on ``device`` (in a worker process); returns their results."""
    out = []
    for name in names:
        print(f"[{device}] {name}", flush=True)
        res = run_experiment(plan, name, device)
        if res["failed"]:
            print(f"[{device}] {name} FAILED in {res['failed']}: {res['error']}", flush=True)
        out.append(res)
    return out


def local_executor(devices: list[str], jobs: int = 1) -> Callable:
    """Return an executor running the experiments in ``jobs`` processes per device of ``devices``."""
    slots = [d for d in devices for _ in range(max(1, jobs))]

    def execute(plan: SuitePlan, configs: dict, echo: Callable[[str], None] = print) -> list[dict]:
        names = list(configs)
        groups = balance(names, len(slots))
        echo(f"running {len(names)} experiments in {len(slots)} processes on {', '.join(dict.fromkeys(devices))}")
        results: dict[str, dict] = {}
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with ProcessPoolExecutor(max_workers=len(slots), mp_context=ctx) as pool:
            futures = {pool.submit(_run_group, plan, g, d): g for g, d in zip(groups, slots) if g}
            for fut in as_completed(futures):
                try:
                    results.update({r["experiment"]: r for r in fut.result()})
                except Exception as exc:  # the process died (OOM killer, segfault): its experiments failed
                    for name in futures[fut]:
                        results.setdefault(name, _lost(Path(configs[name].run_dir), name,
                                                       f"worker process died ({type(exc).__name__})"))
        return [results[n] for n in names]

    return execute


def _lost(run_dir: Path, name: str, why: str) -> dict:
    """Return (and record in ``run_dir``) the result of an experiment whose worker never reported back."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record_failure(run_dir, name, "worker", why)
    return {"experiment": name, "run_dir": str(run_dir), "failed": "worker", "error": why}


def ray_task(plan: SuitePlan, name: str) -> tuple[dict, bytes]:
    """Run one experiment on a Ray worker into a temporary folder; returns (its result, the run folder as tar)."""
    import ray  # optional dependency (convkit[ray]): imported only where Ray runs

    device = "cuda" if ray.get_gpu_ids() else "cpu"
    with tempfile.TemporaryDirectory(prefix="convkit-ray-") as tmp:
        local = replace(plan, train=replace(plan.train, out=tmp, device=device))
        res = run_experiment(local, name)
        folder = Path(res["run_dir"])
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            if folder.is_dir():
                tar.add(folder, arcname=folder.name)
        return {**res, "device": device, "node": os.uname().nodename}, buf.getvalue()


def unpack_run(blob: bytes, suite_dir: Path) -> None:
    """Unpack a run folder shipped back by ``ray_task`` into ``suite_dir`` (replacing an older copy)."""
    suite_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]  # our own archive: files and folders
        names = {m.name.split("/")[0] for m in members}
        for name in names:
            shutil.rmtree(suite_dir / name, ignore_errors=True)
        tar.extractall(suite_dir, members=members)


RAY_CONNECT_TIMEOUT_S = 5.0  # a cluster address that does not accept a connection within this is not waited for


def _answers(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Return True when ``host:port`` (a ray:// prefix dropped) accepts a TCP connection within ``timeout_s``."""
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def connect_ray(address: str | None):
    """Return the ``ray`` module connected to the cluster at ``address`` ("auto": the running one; None: a local
    instance); ConvkitError (one line, exit 2) when Ray or its client is not installed, the address does not
    answer within RAY_CONNECT_TIMEOUT_S or no cluster runs. Ray's own log lines are silenced."""
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # the C++ core's retry warnings, read at import
    try:
        import ray  # optional dependency (convkit[ray])
    except ImportError:
        raise ConvkitError("--ray needs Ray: pip install 'convkit[ray]' (or ray>=2.40)") from None
    if ray.is_initialized():
        return ray
    client = bool(address) and address.startswith("ray://")
    if client and importlib.util.find_spec("grpc") is None:  # what Ray's client itself checks first
        raise ConvkitError(f"--ray {address}: a ray:// address needs Ray's client: pip install 'ray[client]' (or "
                           "run convkit on the cluster's head node with --ray alone)")
    explicit = address if address not in (None, "auto") else os.environ.get("RAY_ADDRESS")
    if explicit and explicit != "auto" and not _answers(explicit):
        raise ConvkitError(f"--ray: no Ray cluster answers at {explicit} within {RAY_CONNECT_TIMEOUT_S:g} s; check "
                           "the address (head node, port 6379, or ray://head:10001) and that the cluster is up")
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except ConnectionError:
        raise ConvkitError("--ray: no running Ray cluster found; start one (`ray start --head`), or pass "
                           "--ray ADDRESS (e.g. ray://head:10001) or set RAY_ADDRESS") from None
    except ValueError as exc:  # Ray's wording for a missing client extra or a malformed address
        raise ConvkitError(f"--ray {address}: {first_line(exc, 200)}") from None
    return ray


def ray_executor(address: str | None, jobs: int = 1) -> Callable:
    """Return an executor running one Ray task per experiment on the cluster at ``address`` ("auto": the
    running one; None: a local instance), with 1/``jobs`` of a GPU per task where the cluster has GPUs."""

    def execute(plan: SuitePlan, configs: dict, echo: Callable[[str], None] = print) -> list[dict]:
        names = list(configs)
        ray = connect_ray(address)
        gpus = 1.0 / max(1, jobs) if ray.cluster_resources().get("GPU") else 0
        task = ray.remote(ray_task).options(num_gpus=gpus, max_retries=1)
        refs = {task.remote(plan, name): name for name in names}
        echo(f"submitted {len(names)} experiments to Ray ({gpus or 'no'} GPU per task)")
        results = {}
        for ref in refs:
            name = refs[ref]
            try:
                res, blob = ray.get(ref)
                run_dir = Path(configs[name].run_dir)
                unpack_run(blob, run_dir.parent)
                res = {**res, "run_dir": str(run_dir)}
            except Exception as exc:  # the task raised (Ray wraps it: report the cause), or its worker died twice
                res = _lost(Path(configs[name].run_dir), name, failure_of(getattr(exc, "cause", None) or exc).message)
            echo(f"{name}: {'FAILED in ' + res['failed'] + ': ' + res['error'] if res['failed'] else 'done'}")
            results[name] = res
        return [results[n] for n in names]

    return execute
