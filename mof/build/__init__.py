"""Building models: from a `MofConfig` for a stage, or from a training checkpoint (read safely); export."""

from .checkpoint import rebuild_from_checkpoint
from .checkpoint_io import CheckpointError, load_checkpoint_file, load_training_checkpoint
from .model import ConfigError, build_model, load_adapters
from .stages import StagePlan, apply_stage, unwrap

__all__ = ["CheckpointError", "ConfigError", "StagePlan", "apply_stage", "build_model", "load_adapters",
           "load_checkpoint_file", "load_training_checkpoint", "rebuild_from_checkpoint", "unwrap"]
