"""``convkit compare BASE NEW``: a regression gate between two evaluations of the same images.

``stats`` holds the paired statistics, ``latency_ab`` the interleaved latency A/B, ``inputs`` turns the two
arguments into per-image predictions (stored evaluations, or two ONNX files evaluated here), ``gate`` makes the
checks and the verdict, ``outputs`` writes compare.md / compare.json / JUnit / the job summary.
"""

# The default margins, here so the CLI states them without importing numpy. Accuracy, in points: MLPerf's closed
# division accepts a quantized model at 99 % of the FP32 reference (about 0.8 points at 80 % top-1); 0.5 points is
# stricter, and still decides on a 10,000-image test split for two models that disagree on up to ~6 % of the images
# (95 % half-width 1.96·√0.06 / 100 ≈ 0.48 points). An execution-provider switch or an ORT upgrade (a fraction of a
# percent of images flip) decides at a 0.2-point margin on the same split; a retrained model usually needs 0.5 or
# more. Latency: a slowdown within 5 % is not a regression (what the interleaved A/B resolves on a shared CPU:
# bench/compare_aa.py).
DEFAULT_MARGIN_POINTS = 0.5
DEFAULT_LATENCY_MARGIN_PERCENT = 5.0
