"""A system under test as a real inference server builds one: a queue of samples in front of runtime backends
(evaluate/serving/backend.py: ONNX Runtime today), each drained by its own worker thread that batches dynamically
— and, for SingleStream, ``SyncSUT``: no queue, no thread; each query runs inside ``issue`` on the caller's thread,
as MLPerf's reference harness does (vision/classification_and_detection/python/main.py maps SingleStream to
RunnerBase, which runs the model inside issue_queries). SingleStream sends the next query only after the last
completed, so a queue there could only add a thread hand-off to every measured latency.

``QueueSUT`` knows nothing about LoadGen: ``issue`` takes (response id, sample index) pairs and every finished
sample is handed to a ``complete`` callback with its output row. ``evaluate/serving/scenarios.py`` connects it to
LoadGen (whose ``issue_query`` callback must return at once, hence the queue). Kept apart so the batching,
threading and failure logic is testable without LoadGen installed.

Batching rule: a worker takes the oldest queued sample, then keeps collecting until it holds ``max_batch``
samples or ``batch_timeout_ms`` have passed since that first sample was *queued* (not since the worker picked it
up: a sample that already waited while the worker was busy is not made to wait again), whichever comes first.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

from convkit.errors import one_line
from convkit.evaluate.serving.backend import Backend

_STOP = object()


@dataclass
class SutConfig:
    """How the SUT serves: batching limits and the threads it uses (all recorded in the results)."""

    max_batch: int = 16
    batch_timeout_ms: float = 2.0  # 0 = never wait for more samples than are already queued
    workers: int = 1  # concurrent sessions, one worker thread each
    intra_op_threads: int = 1  # ORT intra-op threads per session
    inter_op_threads: int = 1  # ORT inter-op threads per session (sequential execution: 1 is enough)
    device_id: int = 0
    synchronous: bool = False  # run each query inside issue (SyncSUT): SingleStream

    def to_dict(self) -> dict:
        """Return the settings as a flat JSON-able dict."""
        return asdict(self)

    def for_model(self, fixed_batch: int | None) -> SutConfig:
        """Return these settings for a model with a static batch size (``fixed_batch``): batches of exactly it."""
        return replace(self, max_batch=fixed_batch or self.max_batch)

    def for_scenario(self, scenario: str, samples_per_query: int) -> SutConfig:
        """Return the settings LoadGen's ``scenario`` runs with.

        Dynamic batching (wait up to the timeout for more samples) only where queries arrive independently:
        Server and Offline. SingleStream/MultiStream issue the next query after the last one finished, so
        waiting could only add latency; their batch is what is already queued (1, or the query's 8 samples).
        SingleStream runs synchronously on one session (``SyncSUT``).
        """
        if scenario in ("server", "offline"):
            return self
        single = scenario == "single-stream"
        return replace(self, batch_timeout_ms=0.0, max_batch=max(1, samples_per_query), synchronous=single,
                       workers=1 if single else self.workers)


class QueueSUT:
    """Samples queue up; ``config.workers`` threads, each with its own backend, batch and run them.

    ``backend_factory()`` returns a new, unloaded Backend (one per worker, loaded in ``load``); ``inputs`` are
    the preprocessed samples (indexable by sample index); ``complete(pairs)`` receives [(response id, output
    row)] per finished batch. After the model raises, ``error`` holds one line and every queued or later sample
    is completed at once with an empty row, so the load generator finishes instead of waiting forever.
    """

    def __init__(self, backend_factory: Callable[[], Backend], inputs: np.ndarray, complete: Callable[[list], None],
                 config: SutConfig | None = None, fixed_batch: int | None = None):
        self.config = config or SutConfig()
        self.inputs = inputs
        self.complete = complete
        self.fixed_batch = fixed_batch  # a model with a static batch size gets padded batches
        self.error: str | None = None
        self.batches: list[int] = []  # size of every batch run (for the report)
        self._factory = backend_factory
        self._q: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.backends: list[Backend] = []

    def load(self) -> "QueueSUT":
        """Load one backend per worker (no thread started: ``warm_up`` can time them); returns self."""
        if not self.backends:
            self.backends = [self._factory().load() for _ in range(self.config.workers)]
        return self

    def start(self) -> "QueueSUT":
        """Load the backends and start one worker thread each; returns self."""
        self.load()
        for i, backend in enumerate(self.backends):
            t = threading.Thread(target=self._work, args=(backend,), name=f"convkit-sut-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers (each finishes its current batch) and wait up to ``timeout`` s for them."""
        for _ in self._threads:
            self._q.put(_STOP)
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def issue(self, samples) -> None:
        """Queue (response id, sample index) pairs; returns at once (LoadGen's issue thread must not block)."""
        if self.error is not None:
            self._complete_empty([s[0] for s in samples])
            return
        now = time.perf_counter()
        for rid, idx in samples:
            self._q.put((rid, idx, now))

    def warm_up(self, batch_sizes=(1,), repeats: int = 3) -> dict:
        """Run each batch size ``repeats`` times on every backend; returns {batch: best seconds per call}."""
        out = {}
        for b in batch_sizes:
            b = self.fixed_batch or b
            x = self._gather(list(range(b)))
            best = float("inf")
            for backend in self.backends:
                for _ in range(repeats):
                    t = time.perf_counter()
                    backend.run(x)
                    best = min(best, time.perf_counter() - t)
            out[b] = best
        return out

    def _gather(self, indices: list[int]) -> np.ndarray:
        if len(indices) == 1 and not self.fixed_batch:
            # a view into the preprocessed samples, as MLPerf's reference feeds one: a fresh copy per query (what
            # fancy indexing makes) measured ~2× slower to run on a small model than the aligned view
            i = indices[0] % len(self.inputs)
            return self.inputs[i:i + 1]
        idx = np.asarray(indices, dtype=np.int64) % len(self.inputs)
        if self.fixed_batch and len(idx) < self.fixed_batch:
            idx = np.concatenate([idx, np.repeat(idx[:1], self.fixed_batch - len(idx))])
        return np.ascontiguousarray(self.inputs[idx])

    def _next_batch(self) -> list | None:
        first = self._q.get()
        if first is _STOP:
            return None
        limit = self.fixed_batch or self.config.max_batch
        deadline = first[2] + self.config.batch_timeout_ms / 1e3
        batch = [first]
        while len(batch) < limit:
            left = deadline - time.perf_counter()
            try:
                item = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._q.put(_STOP)  # leave it for the next loop turn: finish this batch first
                break
            batch.append(item)
        return batch

    def _work(self, backend: Backend) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if not self._run_batch(backend, [b[0] for b in batch], [b[1] for b in batch]):
                self._drain()

    def _run_batch(self, backend: Backend, ids: list, indices: list) -> bool:
        """Run one batch and complete its samples; returns False when the model failed (``error`` set, every sample
        completed empty so the load generator never waits)."""
        if self.error is not None:
            self._complete_empty(ids)
            return True
        try:
            y = backend.run(self._gather(indices))
            if y.ndim != 2 or y.shape[0] < len(ids):
                raise ValueError(f"the output has shape {list(y.shape)} for a batch of {len(ids)}")
        except Exception as exc:  # the model failed: report it, and never leave LoadGen waiting
            with self._lock:
                self.error = self.error or one_line(exc)
            self._complete_empty(ids)
            return False
        self.batches.append(len(ids))
        self.complete(list(zip(ids, y[:len(ids)])))
        return True

    def _drain(self) -> None:
        ids = []
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._q.put(_STOP)
                break
            ids.append(item[0])
        if ids:
            self._complete_empty(ids)

    def _complete_empty(self, ids: list) -> None:
        self.complete([(rid, None) for rid in ids])


class SyncSUT(QueueSUT):
    """SingleStream's SUT: ``issue`` runs the query on the caller's thread (LoadGen's issue thread) and completes it
    before returning — no queue, no worker thread, one backend. The rest (loading, warm-up, padding to a static
    batch, the one-line error and empty completions after a failure) is QueueSUT's."""

    def load(self) -> "SyncSUT":
        """Load the one backend; returns self."""
        if not self.backends:
            self.backends = [self._factory().load()]
        return self

    def start(self) -> "SyncSUT":
        """Load the backend (no thread to start); returns self."""
        return self.load()

    def stop(self, timeout: float = 10.0) -> None:
        """Nothing runs in the background: nothing to stop."""

    def issue(self, samples) -> None:
        """Run the (response id, sample index) pairs as one batch and complete them; returns once they are."""
        samples = list(samples)
        self._run_batch(self.backends[0], [s[0] for s in samples], [s[1] for s in samples])


def make_sut(backend_factory: Callable[[], Backend], inputs: np.ndarray, complete: Callable[[list], None],
             config: SutConfig, fixed_batch: int | None = None) -> QueueSUT:
    """Return the SUT ``config`` asks for, unstarted: SyncSUT when ``config.synchronous``, else QueueSUT."""
    cls = SyncSUT if config.synchronous else QueueSUT
    return cls(backend_factory, inputs, complete, config, fixed_batch)
