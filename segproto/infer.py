"""Segment images: ``python -m segproto.infer MODEL IMAGES... --out DIR`` (MODEL: a training
checkpoint or an export of any format; also ``CONFIG CKPT IMAGES...``).

Per image, ``DIR/<name>_pred.png`` (class ids, palette PNG) and ``DIR/<name>_overlay.png`` (the
image blended with the class colours). Neither a config nor the dataset is needed. A file that
cannot be read is reported on one line and skipped; a summary follows, and the exit status is 1
when any image failed. Prediction and overlay files already in DIR are replaced only with
``--force``; ``--debug`` shows the traceback of an error. Two inputs never write the same output:
names that collide (``x.jpg`` and ``x.png``, or the same name in two folders) keep their extension,
then a counter.
HDMNet models segment the class shown by ``--support IMG MASK`` (given once per shot).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from segproto.cli import (add_debug_arg, add_test_mode_args, load_or_exit, output_path, refuse_existing, run_or_exit,
                          test_mode_or_exit)
from segproto.deploy import default_palette  # noqa: F401  (re-exported)
from segproto.visualize import colorize, overlay, save_label_png  # noqa: F401  (re-exported)

_CONFIG_SUFFIXES = (".yaml", ".yml")


def output_names(paths: Sequence[str]) -> list[str]:
    """One distinct output name per input: the stem; the file name with its extension
    (``x_jpg``) where stems collide; then ``_2``, ``_3``... where even those collide."""
    stems = Counter(Path(p).stem for p in paths)
    first = [Path(p).stem if stems[Path(p).stem] == 1 else Path(p).name.replace(".", "_") for p in paths]
    seen: Counter = Counter()
    out = []
    for name in first:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    taken = set()
    for i, name in enumerate(out):  # a counter name may equal another input's name
        while name in taken:
            name += "_"
        taken.add(name)
        out[i] = name
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.infer", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", metavar="MODEL IMAGES...",
                   help="checkpoint or export, then images (or CONFIG CKPT IMAGES...)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--support", nargs=2, action="append", metavar=("IMG", "MASK"), default=[],
                   help="HDMNet: a support image and its mask (non-zero = foreground); once per shot")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    p.add_argument("--force", action="store_true", help="replace prediction and overlay files already in --out")
    add_debug_arg(p)
    p.add_argument("--cfg-options", "--opts", dest="cfg_options", nargs="+", action="extend", default=[],
                   metavar="KEY=VALUE", help="overrides of CONFIG (CONFIG CKPT IMAGES... form)")
    add_test_mode_args(p)
    a = p.parse_args(argv)
    paths = list(a.paths)
    cfg = None
    if Path(paths[0]).suffix.lower() in _CONFIG_SUFFIXES:
        cfg = load_or_exit(paths.pop(0), a.cfg_options, a.debug)
    if len(paths) < 2:
        p.error("expected MODEL IMAGES... (or CONFIG CKPT IMAGES...)")
    mode = test_mode_or_exit(a, cfg.test if cfg is not None else None)
    return run_or_exit(lambda: _infer(a, paths, cfg, mode), a.debug)


def _infer(a: argparse.Namespace, paths: list[str], cfg, mode) -> int:
    from segproto.deploy import inference, load_model, read_mask, to_rgb

    images = paths[1:]
    names = output_names(images)
    out = output_path(a.out, "--out", folder=True)
    refuse_existing([out / f"{n}_{kind}.png" for n in names for kind in ("pred", "overlay")], "--out", a.force)
    model = load_model(paths[0], a.device, config=cfg)
    if model.kind == "hdmnet" and not a.support:
        print(f"error: {paths[0]} is a few-shot (HDMNet) model: give the class to segment with --support IMG MASK "
              f"(once per shot)", file=sys.stderr)
        return 2
    if model.kind != "hdmnet" and a.support:
        print(f"error: --support is for few-shot (HDMNet) models; {paths[0]} is a {model.num_classes}-class segmentor",
              file=sys.stderr)
        return 2
    support = []
    for img, mask in a.support:
        try:
            support.append((to_rgb(img), read_mask(mask)))
        except (ValueError, OSError) as exc:
            raise ValueError(f"--support: {exc}") from exc
    palette = model.palette
    failed = 0
    for path, name in zip(images, names):
        try:
            img = to_rgb(path)
            pred = inference(model, img, test_mode=mode, support=support or None)
        except (ValueError, OSError) as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        save_label_png(pred, palette, out / f"{name}_pred.png")
        shown = np.round(img).clip(0, 255).astype(np.uint8)
        from PIL import Image

        Image.fromarray(overlay(shown, pred, palette, a.alpha)).save(out / f"{name}_overlay.png")
        print(f"{path} -> {out / (name + '_pred.png')}, {out / (name + '_overlay.png')}")
    done = len(images) - failed
    print(f"{done} of {len(images)} images segmented" + (f", {failed} failed (see the errors above)" if failed else "")
          + f"; outputs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
