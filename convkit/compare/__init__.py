"""``convkit compare BASE NEW``: a regression gate between two evaluations of the same images.

``stats`` holds the paired statistics, ``latency_ab`` the interleaved latency A/B, ``inputs`` turns the two
arguments into per-image predictions (stored evaluations, or two ONNX files evaluated here), ``gate`` makes the
checks and the verdict, ``outputs`` writes compare.md / compare.json / JUnit / the job summary.
"""
