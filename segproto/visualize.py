"""Pictures of predictions: colour maps, overlays, image | ground truth | prediction panels with a
class legend (``--show-dir`` of ``python -m segproto.test``), and the confusion matrix (JSON and heat map)
that ``segproto.test --out`` and the trainer's final evaluation write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["colorize", "overlay", "side_by_side", "save_label_png", "confusion_heatmap", "write_confusion",
           "denormalize"]

IGNORE_COLOUR = (128, 128, 128)  # ground-truth pixels of ignore_index
MIN_PANEL = 192  # panels smaller than this are enlarged (nearest) so that labels stay visible


def colorize(pred: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: Optional[int] = None) -> np.ndarray:
    """``[H, W]`` class ids -> ``[H, W, 3]`` uint8 colours (``ignore_index`` grey, unknown ids black)."""
    lut = np.zeros((max(256, len(palette)), 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    if ignore_index is not None and 0 <= ignore_index < len(lut):
        lut[ignore_index] = IGNORE_COLOUR
    return lut[np.clip(pred.astype(np.int64), 0, len(lut) - 1)]


def overlay(img: np.ndarray, pred: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the colour map of ``pred``."""
    return (img.astype(np.float32) * (1 - alpha) + colorize(pred, palette) * alpha).clip(0, 255).astype(np.uint8)


def save_label_png(pred: np.ndarray, palette, path: str | Path) -> None:
    """Class ids as a palette PNG (pixel value = class id, shown in the class colours); more than
    256 classes are written as 16-bit grayscale."""
    from PIL import Image

    if len(palette) <= 256 and pred.max(initial=0) < 256:
        im = Image.fromarray(pred.astype(np.uint8), mode="P")
        flat = np.zeros((256, 3), np.uint8)
        flat[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
        im.putpalette(flat.reshape(-1).tolist())
    else:
        im = Image.fromarray(pred.astype(np.uint16))
    im.save(path)


def denormalize(img, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``[3, H, W]`` tensor back to uint8 ``[H, W, 3]`` RGB (for pictures)."""
    x = img.detach().float().cpu().numpy().transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
    return x.round().clip(0, 255).astype(np.uint8)


def _enlarge(panels: list[np.ndarray]) -> list[np.ndarray]:
    h = panels[0].shape[0]
    f = max(1, -(-MIN_PANEL // h)) if h < MIN_PANEL else 1
    return [p.repeat(f, 0).repeat(f, 1) if f > 1 else p for p in panels]


def _legend(entries: Sequence[tuple[str, Sequence[int]]], width: int) -> np.ndarray:
    """Rows of colour swatches and class names, ``width`` pixels wide (PIL's default font)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw0 = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sw, pad, line = 12, 6, 16
    cells = [(name, col, sw + 4 + int(draw0.textlength(name, font=font)) + 2 * pad) for name, col in entries]
    rows, x = [[]], 0
    for cell in cells:
        if x + cell[2] > width and rows[-1]:
            rows.append([])
            x = 0
        rows[-1].append(cell)
        x += cell[2]
    im = Image.new("RGB", (width, line * len(rows) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for r, row in enumerate(rows):
        x, y = pad, pad // 2 + r * line
        for name, col, w in row:
            draw.rectangle([x, y + 2, x + sw, y + 2 + sw - 1], fill=tuple(int(c) for c in col), outline=(0, 0, 0))
            draw.text((x + sw + 4, y + 1), name, fill=(0, 0, 0), font=font)
            x += w
    return np.asarray(im)


def side_by_side(panels: Sequence[np.ndarray], classes: Sequence[str], palette, present: Sequence[int],
                 titles: Optional[Sequence[str]] = None) -> np.ndarray:
    """Panels (``[H, W, 3]`` uint8, same size) in a row, a white gap between them, titles above and
    a legend of the ``present`` classes below."""
    from PIL import Image, ImageDraw, ImageFont

    panels = _enlarge([np.asarray(p, np.uint8) for p in panels])
    gap = np.full((panels[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    width = row.shape[1]
    parts = []
    if titles:
        head = Image.new("RGB", (width, 16), (255, 255, 255))
        draw, font = ImageDraw.Draw(head), ImageFont.load_default()
        step = panels[0].shape[1] + 4
        for i, t in enumerate(titles):
            draw.text((i * step + 2, 2), t, fill=(0, 0, 0), font=font)
        parts.append(np.asarray(head))
    parts.append(row)
    entries = [(classes[c] if 0 <= c < len(classes) else str(c), palette[c] if 0 <= c < len(palette) else (0, 0, 0))
               for c in present]
    if entries:
        parts.append(_legend(entries, width))
    return np.concatenate(parts, axis=0)


def confusion_heatmap(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix (each ground-truth row sums to 1; empty rows stay 0) as a
    heat map PNG, rows = ground truth, columns = prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(classes)
    size = max(4.0, 0.32 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(norm, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(k), labels=classes, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels=classes, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if norm[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the ground-truth row")
    ax.set_title(title or "confusion matrix (rows normalised)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_confusion(cm, names, path, title: str = "") -> None:
    """``path`` (JSON: ``classes``, ``rows``/``cols`` meaning, ``matrix`` counts) and the heat map
    ``path`` with suffix ``.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"classes": list(names), "rows": "ground truth", "cols": "prediction",
                                "matrix": [[int(v) for v in row] for row in cm]}))
    confusion_heatmap(np.asarray(cm), list(names), path.with_suffix(".png"), f"confusion matrix (rows normalised) {title}")
