"""diffpolicy: diffusion policies for robot learning that measure whether modes survive."""

from diffpolicy.errors import CheckpointError, ConfigError, DatasetError, UserError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "DatasetError", "UserError", "__version__"]
