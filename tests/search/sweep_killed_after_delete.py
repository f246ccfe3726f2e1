"""Runs a ``search/sweep.py`` command line with Tune's checkpoint deletion patched so that the
driver SIGKILLs itself right after it empties the first checkpoint folder it deletes.

Tune deletes a trial's checkpoints beyond ``num_to_keep`` as soon as it registers a newer one and
records the newer one at its next experiment snapshot; this lands a kill deterministically in
that window. Usage: ``python tests/search/sweep_killed_after_delete.py search/sweep.py ARGS...``
"""

import os
import runpy
import signal
import sys

from ray.train._internal import checkpoint_manager

assert hasattr(checkpoint_manager, "_delete_fs_path"), "Ray moved the checkpoint deletion this test patches"


def _empty_then_die(fs, fs_path):
    fs.delete_dir_contents(fs_path)
    os.kill(os.getpid(), signal.SIGKILL)


checkpoint_manager._delete_fs_path = _empty_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
