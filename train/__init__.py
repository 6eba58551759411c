"""Training stage: ``train_experiment`` trains one experiment into its run folder (see convkit.artifacts).

One module per job; the module map is docs/layout.md.
"""

import importlib

# Loaded on first use, so that importing the package (as `convkit --help` does for its cli module) stays cheap.
_EXPORTS = {"TrainConfig": "config", "TrainOverrides": "config", "resolve_config": "config",
            "train_experiment": "run"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
