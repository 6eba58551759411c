"""The runtime behind the SUT, as one small interface: ``load()`` builds the runtime's session, ``run(x)`` maps
a host batch to host scores, ``io_binding`` says whether it feeds the device through bound buffers. MLPerf's
reference harness keeps one such backend class per runtime apart from its SUT and load generator; so does
convkit: ``QueueSUT`` (sut.py) and the LoadGen scenarios (scenarios.py) see only this interface, and a second
runtime is a second class here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class Backend(Protocol):
    """One model loaded in one runtime (the SUT makes one per worker)."""

    name: str

    def load(self) -> Backend:
        """Build the runtime's session; returns self."""

    def run(self, x: np.ndarray) -> np.ndarray:
        """Return the scores [batch, classes] of the host batch ``x``, on the host."""

    @property
    def io_binding(self) -> bool:
        """Return True when batches reach the device through bound buffers."""


def uses_io_binding(session) -> bool:
    """Return True when the ORT ``session`` runs on a GPU provider, where the SUT feeds it through IO binding."""
    try:
        return session.get_providers()[0] in CUDA_PROVIDERS
    except (AttributeError, IndexError):
        return False


def run_batch(session, input_name: str, output_name: str, x: np.ndarray, device_id: int = 0) -> np.ndarray:
    """Return the output [batch, classes] of the ORT ``session`` for the host batch ``x``.

    On CUDA the input is bound from host memory and the output is allocated on the device and copied back
    once: ORT then skips its per-call output allocation and the extra staging copy of ``session.run``.
    """
    if uses_io_binding(session):
        io = session.io_binding()
        io.bind_cpu_input(input_name, x)
        io.bind_output(output_name, "cuda", device_id)
        session.run_with_iobinding(io)
        return np.asarray(io.copy_outputs_to_cpu()[0])
    return np.asarray(session.run([output_name], {input_name: x})[0])


@dataclass
class OrtBackend:
    """ONNX Runtime: ``session_factory()`` builds the InferenceSession (in ``load``); ``run`` feeds the named input
    and reads the named output, through IO binding on CUDA."""

    session_factory: Callable[[], object]
    input_name: str
    output_name: str
    device_id: int = 0
    name: str = "onnxruntime"
    session: object = None

    _host: bool = False  # decided once in load: CPU sessions skip run_batch's provider check on every call

    def load(self) -> OrtBackend:
        """Build the session; returns self."""
        self.session = self.session_factory()
        self._host = not uses_io_binding(self.session)
        return self

    def run(self, x: np.ndarray) -> np.ndarray:
        """Return the output [batch, classes] for the host batch ``x``."""
        if self._host:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        return run_batch(self.session, self.input_name, self.output_name, x, self.device_id)

    @property
    def io_binding(self) -> bool:
        """Return True when the session runs on a GPU provider (fed through IO binding)."""
        return uses_io_binding(self.session)
