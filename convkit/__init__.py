"""convkit: train convolutional networks, export them to ONNX and re-measure them under ONNX Runtime."""

import os as _os

__version__ = "0.1.0"

# In a source checkout the pipeline stages live in the top-level folders train/, export/ and evaluate/, which
# setup.cfg installs as convkit.train, convkit.export and convkit.evaluate. When this package is imported from
# the checkout itself (tests run from the repo root, a machine without an install), let the same imports
# resolve there. An installed copy has no setup.cfg beside it and is left alone.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "setup.cfg")) and _os.path.isfile(_os.path.join(_root, "train", "__init__.py")):
    __path__.append(_root)  # noqa: F821 (module attribute of a package)
