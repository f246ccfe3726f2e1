"""The checkpoint functions under the engine's name; they live in :mod:`segproto.utils.checkpoint`
(a leaf module, so that methods and tools can read checkpoints without importing the engine)."""

from segproto.utils.checkpoint import (RUN_FILES, CheckpointError, CheckpointSaveError, atomic_torch_save,
                                       find_last_checkpoint, load_checkpoint, read_state, remove_stale_temps,
                                       run_files, save_checkpoint, save_marker)

__all__ = ["RUN_FILES", "CheckpointError", "CheckpointSaveError", "atomic_torch_save", "find_last_checkpoint",
           "load_checkpoint", "read_state", "remove_stale_temps", "run_files", "save_checkpoint", "save_marker"]
