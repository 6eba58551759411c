"""SingleStream issues synchronously (issue 31): the query runs inside LoadGen's issue callback, on its thread,
with no queue and no worker thread; the other scenarios keep the queue SUT."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from convkit.evaluate.serving import scenarios as sc
from convkit.evaluate.serving.backend import OrtBackend
from convkit.evaluate.serving.sut import QueueSUT, SutConfig, SyncSUT, make_sut

try:
    import mlperf_loadgen  # noqa: F401

    HAVE_LOADGEN = True
except ImportError:
    HAVE_LOADGEN = False


class ThreadRecordingSession:
    """An ORT session stand-in recording the thread of every call."""

    threads: list = []

    def get_providers(self):
        return ["CPUExecutionProvider"]

    def run(self, names, feed):
        ThreadRecordingSession.threads.append(threading.get_ident())
        x = next(iter(feed.values()))
        return [np.tile(np.arange(3, dtype=np.float32), (len(x), 1))]


def _factory():
    return OrtBackend(ThreadRecordingSession, "x", "y")


def test_single_stream_config_is_synchronous_and_others_queue():
    base = SutConfig(max_batch=16, workers=4)
    assert make_sut(_factory, np.zeros((4, 2), np.float32), print,
                    base.for_scenario("single-stream", 1)).__class__ is SyncSUT
    for name, per_query in (("multi-stream", 8), ("server", 1), ("offline", 1)):
        assert make_sut(_factory, np.zeros((4, 2), np.float32), print,
                        base.for_scenario(name, per_query)).__class__ is QueueSUT


def test_sync_sut_completes_inside_issue_on_the_callers_thread():
    done = []
    ThreadRecordingSession.threads = []
    before = threading.active_count()
    sut = SyncSUT(_factory, np.zeros((10, 2), np.float32), done.extend, SutConfig().for_scenario("single-stream", 1))
    sut.start()
    assert threading.active_count() == before  # no worker thread started
    for rid in range(5):
        sut.issue([(100 + rid, rid)])
        assert [r for r, _ in done] == list(range(100, 101 + rid))  # completed before issue returned
    sut.stop()
    assert set(ThreadRecordingSession.threads) == {threading.get_ident()}
    assert sut.batches == [1] * 5 and len(sut.backends) == 1
    np.testing.assert_array_equal(done[0][1], np.arange(3, dtype=np.float32))


@pytest.mark.skipif(not HAVE_LOADGEN, reason="mlcommons-loadgen not installed")
def test_single_stream_under_loadgen_runs_on_loadgens_issue_thread(tmp_path, monkeypatch):
    """Every inference of a LoadGen SingleStream run happens on the thread LoadGen calls issue_query from (with
    mlcommons-loadgen 6 the thread that started the test), and no convkit thread exists during the run."""
    monkeypatch.setattr(sc, "QUICK_MIN_DURATION_MS", 300)
    monkeypatch.setattr(sc, "QUICK_MIN_QUERIES", 32)
    ThreadRecordingSession.threads = []
    issue_threads, convkit_threads = set(), []
    real = SyncSUT.issue

    def spy(self, samples):
        issue_threads.add(threading.get_ident())
        convkit_threads.extend(t.name for t in threading.enumerate() if t.name.startswith("convkit-sut"))
        return real(self, samples)

    monkeypatch.setattr(SyncSUT, "issue", spy)
    served = sc.Served(_factory, np.zeros((64, 2), np.float32))
    opts = sc.ScenarioOptions(scenarios=("single-stream",), quick=True, accuracy=False)
    (row,) = sc.run_scenarios(served, opts, tmp_path)
    assert row["sut_synchronous"] is True and row["query_count"] >= 32
    run_threads = ThreadRecordingSession.threads[-row["query_count"]:]
    assert set(run_threads) == issue_threads and len(issue_threads) == 1
    assert convkit_threads == []
