"""Model architectures, built from their config section through one registry.

Importing this package registers every architecture (the imports below are for that effect).
"""

from reco.models import (
    cnn,  # noqa: F401  (registers "cnn")
    part,  # noqa: F401  (registers "part")
    particlenet,  # noqa: F401  (registers "particlenet")
    pcnn,  # noqa: F401  (registers "pcnn")
    pfn,  # noqa: F401  (registers "pfn")
    set_transformer,  # noqa: F401  (registers "set_transformer")
)
from reco.models.registry import (
    ModelConfig,
    build_model,
    register_model,
    registered_models,
)

__all__ = ["ModelConfig", "build_model", "register_model", "registered_models"]
