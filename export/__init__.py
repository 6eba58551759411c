"""Export stage: trained runs → ``model.onnx`` (+ fp16/int8 variants) and ``export.json``, behind a parity gate.

``export_run`` exports one run directory, ``export_checkpoint`` a bare checkpoint, ``export_all`` every run
of a suite folder; ``export_stage`` plugs the export into ``train-all``. Heavy imports (torch, onnx,
onnxruntime) happen inside the functions, so importing this package is cheap.
"""

from convkit.export.pipeline import export_all, export_checkpoint, export_run
from convkit.export.stage import export_stage

__all__ = ["export_all", "export_checkpoint", "export_run", "export_stage"]
