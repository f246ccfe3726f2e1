"""Child process of the fault-injection tests: trains CONFIG in WORK_DIR and SIGKILLs itself at a
seeded random moment inside one phase (``train``: a training step, ``eval``: an evaluation,
``save``: a checkpoint write), as ``kill -9`` from outside would.

    python tests/engine/fault_child.py CONFIG WORK_DIR PHASE SEED

The moment: the phase's call number ``n`` (seeded) starts a timer that fires after a seeded delay
drawn from the phase's typical length, so the kill lands at varied points inside it (or just
after it).
"""

import os
import random
import signal
import sys
import threading


def main() -> None:
    cfg_path, work_dir, phase, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = random.Random(seed)
    from segproto.config import load_config
    from segproto.engine import trainer
    from segproto.utils import checkpoint  # where save_checkpoint looks up atomic_torch_save

    cfg = load_config(cfg_path)
    calls = {"n": 0}
    # train: one of the steps; eval: one of the evaluations; save: one of the checkpoint writes
    count = {"train": cfg.train.iters, "eval": cfg.train.iters // cfg.train.eval_interval,
             "save": cfg.train.iters // cfg.train.checkpoint_interval}[phase]
    target = rng.randint(1, count)
    delay = rng.uniform(0.0, {"train": 0.4, "eval": 0.3, "save": 0.5}[phase])

    def arm() -> None:
        calls["n"] += 1
        if calls["n"] == target:
            threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()

    def wrap(owner, name):
        real = getattr(owner, name)

        def hooked(*a, **k):
            arm()
            return real(*a, **k)

        setattr(owner, name, hooked)

    if phase == "train":
        wrap(trainer.Trainer, "_step")
    elif phase == "eval":
        wrap(trainer.Trainer, "_evaluate")
    else:
        wrap(checkpoint, "atomic_torch_save")
    trainer.Trainer(cfg, work_dir).run()
    threading.Event().wait(1.0)  # a timer armed near the end still fires: the kill may follow the run


if __name__ == "__main__":
    main()
