"""Every knob of an evaluation, grouped by what it controls: data, providers, timing and gates.

The CLI fills ``EvalOptions`` from its flags; ``quick_options`` is what train-all's pipeline uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convkit import gates
from convkit.devices import Device, reference_device

if TYPE_CHECKING:  # typed without importing LoadGen's or the corruptions' modules at start-up
    from convkit.evaluate.robustness import CorruptionOptions
    from convkit.evaluate.serving.scenarios import ScenarioOptions

CPU_BATCHES = (1, 8, 64, 256)
GPU_BATCHES = (1, 8, 64, 256, 1024)
# Upper bounds of the count and size options: beyond them a run would not fit in memory or in a day, so the CLI
# refuses the value in one line instead of being killed by the kernel half-way.
MAX_BATCH_SIZE = 8192  # 8192 CIFAR-10 images are 100 MB of float32 input; 1e8 asked for 73 GiB
MAX_RUNS = 100_000  # the latency runner stops at this many timed calls (latency.Timing.max_runs)
MAX_WARMUP = 10_000
MAX_THREADS = 1024
MAX_IMAGE_SIDE = 4096  # --resize / --crop, in pixels


@dataclass
class DataOptions:
    """Which test data, and how the model's input is prepared (None = the model's metadata / as trained)."""

    dataset: str | None = None
    data_dir: str | None = None
    data_path: str | None = None  # --data: an ImageFolder or a path,label CSV (instead of a catalog dataset)
    classes: str | None = None  # --classes FILE: class names in the model's output order
    geometry: dict = field(default_factory=dict)  # geometry flags (convkit.preprocessing field names)
    sample: bool | None = None  # None = as the run was trained (run dirs), else False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None
    input_range: str | None = None
    channel_order: str | None = None  # "rgb" | "bgr"
    output: str | None = None  # the graph output holding the class scores (needed when the model has several)
    preprocessing_config: str | None = None  # HF preprocessor_config.json / timm config.json / <model>.convkit.json
    input_shape: tuple[int, int, int] | None = None  # C,H,W of a flattened [N, C*H*W] input
    accept_defaults: bool = False  # a probe that finds better preprocessing does not change the exit code
    save_preprocessing: bool = False  # write <model>.convkit.json with the preprocessing used
    eval_batch: int = 256
    max_images: int | None = None  # at most this many test images, evenly spaced (None: all, or as trained)


@dataclass
class ProviderOptions:
    """Which ONNX Runtime providers, and how their sessions are configured."""

    provider: str | None = None  # None = every provider that really works; or cpu|cuda|tensorrt|all
    # The GPU the CUDA/TensorRT providers, IO binding, the PyTorch reference, the timings' synchronisation and the
    # hardware record use (a run trained on cuda:1 is evaluated on cuda:1): the one value they all derive from.
    gpu: Device = field(default_factory=lambda: Device.gpu(0))
    threads: int | None = None  # CPU intra-op threads (ORT and PyTorch); None = physical cores
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    reference_device: str | None = None  # PyTorch reference (fp32, TF32 off); None: ``gpu`` when usable, else cpu

    @property
    def device_id(self) -> int:
        """Return ONNX Runtime's device_id of ``gpu``."""
        return self.gpu.ort_device_id

    def reference(self) -> str:
        """Return the device label the PyTorch reference runs on (``reference_device``, else ``gpu`` when CUDA is
        usable, else cpu)."""
        return reference_device(self.reference_device, self.gpu)


@dataclass
class TimingOptions:
    """What latency to measure and how long: batch sizes, warm-up, repetitions, extra backends."""

    latency: bool = True
    warmup: int = 10
    runs: int = 50
    min_seconds: float = 1.0
    batch_sizes: tuple[int, ...] | None = None  # overrides both lists below
    cpu_batches: tuple[int, ...] = CPU_BATCHES
    gpu_batches: tuple[int, ...] = GPU_BATCHES
    cuda_graph: bool = True
    torch_compile: bool = True
    pytorch_latency: bool = True

    def batches_for(self, provider: str) -> list[int]:
        """Return the batch sizes to time on ``provider`` ("cpu" or a GPU provider)."""
        return list(self.batch_sizes or (self.cpu_batches if provider == "cpu" else self.gpu_batches))


@dataclass
class EvalOptions:
    """One evaluation: data, providers, timing, which precisions, the accuracy gate, where outputs go."""

    data: DataOptions = field(default_factory=DataOptions)
    providers: ProviderOptions = field(default_factory=ProviderOptions)
    timing: TimingOptions = field(default_factory=TimingOptions)
    precisions: tuple[str, ...] | None = None  # None = every variant found
    max_accuracy_drop: dict = field(default_factory=lambda: dict(gates.MAX_ACC_DROP))  # points per precision
    out: str | None = None
    serving: ScenarioOptions | None = None  # MLPerf LoadGen scenarios; None (or none listed) = skip
    corruptions: CorruptionOptions | None = None  # corrupted copies of the test split; None = skip


def quick_options(precisions: tuple[str, ...] = ("fp32",), corruptions: CorruptionOptions | None = None) -> EvalOptions:
    """Return the options train-all evaluates with: the given precisions; batch 1 and the largest default batch;
    1 warm-up and 5 timed calls, no minimum duration; no CUDA graphs and no PyTorch latency (PyTorch accuracy
    is still computed for the gate); ``corruptions`` (robustness.CorruptionOptions) as given."""
    timing = TimingOptions(warmup=1, runs=5, min_seconds=0.0, cpu_batches=(1, CPU_BATCHES[-1]),
                           gpu_batches=(1, GPU_BATCHES[-1]), cuda_graph=False, torch_compile=False,
                           pytorch_latency=False)
    return EvalOptions(timing=timing, precisions=tuple(precisions), corruptions=corruptions)
