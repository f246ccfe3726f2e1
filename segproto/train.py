"""Train a model: ``python -m segproto.train CONFIG [--work-dir D] [--resume [CKPT]] [--force] [--amp]
[--debug] [--cfg-options a.b=v ...]``. DDP: ``torchrun --nproc_per_node N -m segproto.train CONFIG``, or
``python -m segproto.train CONFIG --launcher ray --workers N`` on a Ray cluster (docs/distributed.md)."""

from __future__ import annotations

import argparse
import sys

from segproto.cli import add_config_args, load_or_exit, run_or_exit
from segproto.launch import add_launcher_args, check_launcher_args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.train", description=__doc__.split("\n")[0])
    add_config_args(p)
    p.add_argument("--work-dir", help="output directory (default: work_dir of the config, else work_dirs/<config "
                                      "path without configs/ and .yaml>)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue exactly from CKPT, or from the work dir's last checkpoint")
    p.add_argument("--force", action="store_true",
                   help="a fresh run in a work dir that holds another run removes that run's checkpoints, "
                        "last_checkpoint, scalars.jsonl and metrics.json first (without it: an error)")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    add_launcher_args(p)
    a = p.parse_args(argv)
    check_launcher_args(p, a)
    if a.force and a.resume:
        p.error("--force starts a fresh run; it cannot be combined with --resume")
    overrides = list(a.cfg_options) + (["train.amp=true"] if a.amp else [])
    cfg = load_or_exit(a.config, overrides, a.debug)
    from segproto.engine.run_log import default_work_dir

    work_dir = a.work_dir or cfg.work_dir or default_work_dir(a.config)

    if a.launcher == "ray":
        from segproto.launch import run_on_ray

        return run_or_exit(lambda: run_on_ray(cfg, work_dir, a), a.debug)

    from segproto.engine import Trainer

    return run_or_exit(lambda: Trainer(cfg, work_dir, resume=a.resume, force=a.force).run(), a.debug)


if __name__ == "__main__":
    sys.exit(main())
