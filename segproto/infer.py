"""Predict images: ``python -m segproto.infer CONFIG CKPT IMAGES... --out DIR`` writes, per image, a
label PNG (class ids) and a colour overlay."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from segproto.cli import add_config_args, load_or_exit, trained_or_exit


def default_palette(k: int) -> list[tuple[int, int, int]]:
    """A fixed, distinguishable palette when the dataset defines none."""
    rng = np.random.default_rng(0)
    return [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(k)]


def colorize(pred: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """[H, W] class ids -> [H, W, 3] uint8 colours (255 = black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[pred.astype(np.uint8)]


def overlay(img: np.ndarray, pred: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    return (img.astype(np.float32) * (1 - alpha) + colorize(pred, palette) * alpha).astype(np.uint8)


@torch.no_grad()
def predict(method, img: np.ndarray, mean, std, device) -> np.ndarray:
    """[H, W, 3] uint8 RGB -> [H, W] predicted class ids."""
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return method(x[None].to(device)).argmax(1)[0].cpu().numpy()


def save_overlays(method, dataset, out_dir, palette: Optional[list], device) -> None:
    """Overlays for every sample of a dataset (used by ``segproto.test --show-dir``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    palette = palette or default_palette(dataset.num_classes)
    for i in range(len(dataset)):
        img, _ = dataset.load(i)
        logits = method(dataset[i]["img"][None].to(device))
        pred = logits.argmax(1)[0].cpu().numpy()
        Image.fromarray(overlay(img, pred, palette)).save(out / f"{dataset.names[i]}.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m segproto.infer", description=__doc__.split("\n")[0])
    add_config_args(p)
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True, help="output directory")
    a = p.parse_args(argv)
    cfg = load_or_exit(a.config, a.cfg_options)

    from segproto.data import load_image

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _, k, _, palette, method = trained_or_exit(cfg, a.checkpoint, cfg.data.val_split, device)  # val: label space
    palette = palette or default_palette(k)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in a.images:
        img = load_image(path)
        pred = predict(method, img, cfg.data.mean, cfg.data.std, device)
        stem = Path(path).stem
        Image.fromarray(pred.astype(np.uint8)).save(out / f"{stem}_pred.png")
        Image.fromarray(overlay(img, pred, palette)).save(out / f"{stem}_overlay.png")
        print(f"{path} -> {out / (stem + '_overlay.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
