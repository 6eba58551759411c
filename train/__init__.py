"""Training stage: ``train_experiment`` trains one experiment, ``train_all`` a whole suite."""

from convkit.train.config import TrainConfig, resolve_config
from convkit.train.run import train_experiment
from convkit.train.suite_run import train_all

__all__ = ["TrainConfig", "resolve_config", "train_experiment", "train_all"]
