"""The one trainer, evaluation loop, checkpoints and run outputs."""

from segproto.utils.checkpoint import CheckpointError, find_last_checkpoint, load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .trainer import NonFiniteLossError, Trainer

__all__ = ["Trainer", "NonFiniteLossError", "evaluate", "CheckpointError", "find_last_checkpoint",
           "load_checkpoint", "save_checkpoint"]
