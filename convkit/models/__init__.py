"""Model registry and the built-in architectures (importing this package registers them all)."""

from convkit.models import kernel_equal, seed  # noqa: F401  (registration side effect)
from convkit.models.registry import ModelConfig, create_model, get_model_config, list_models, register_model

__all__ = ["ModelConfig", "create_model", "get_model_config", "list_models", "register_model"]
