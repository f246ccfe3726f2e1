"""t-SNE picture of a checkpoint's pixel embeddings: ``python -m segproto.tools.embeddings CONFIG CKPT
--out fig.png [--split val] [--num-images 50] [--per-class 200] [--level 0] [--perplexity 30] [--seed 0]
[--device cpu] [--force] [--debug] [--cfg-options ...]``.

The full training method of the config is built and the checkpoint's ``model`` state loaded into
it, so the checkpoint must be a training checkpoint (``iter_N.pth`` / ``best_mIoU_iter_N.pth``):
an exported model has no projection head. Embeddings are the projection head's unit-norm output
when the method has one (PiCo, HiPoSeg), else the L2-normalised decoder features (CE), computed
in eval mode without gradients. Labels are resized to the embedding grid (nearest), ignored pixels
dropped, and at most ``--per-class`` pixels per class are drawn (uniformly, with a generator
seeded by ``--seed``) from the first ``--num-images`` images of the split. The points are coloured
by class of taxonomy level ``--level`` (0 = finest) and, with a taxonomy, their marker shape shows
the coarsest-level class. ``fig.png`` comes with ``fig.json`` (coordinates, labels, settings) so
the picture can be redrawn. The same arguments give the same coordinates.

Exit status: 2 for a bad argument or config, 1 for a missing/unsuitable checkpoint, a data error
or too few points for the perplexity.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segproto.cli import add_config_args, add_debug_arg, load_or_exit, output_path, run_or_exit

__all__ = ["EmbeddingError", "Loaded", "load_training_method", "pixel_embeddings", "keep_per_class",
           "collect", "tsne", "draw", "main"]

# Filled markers (drawn without edges), one per coarse class, cycled beyond 15.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "p", "h", "8", "d", "H")


class EmbeddingError(RuntimeError):
    """The input cannot be pictured (an exported model, no projection head, too few points)."""


class Loaded(NamedTuple):
    dataset: Any  # the split's dataset (classes, palette, taxonomy)
    method: nn.Module  # the full training method, eval mode, on the device
    iteration: Optional[int]  # the checkpoint's training iteration
    source: str  # "proj" (projection head) or "feats" (decoder features)


def _iteration(state: dict, ckpt: str | Path) -> Optional[int]:
    meta = state.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("iter"), int):
        return int(meta["iter"])
    m = re.search(r"iter_(\d+)", Path(ckpt).name)
    return int(m.group(1)) if m else None


def load_training_method(cfg: Any, ckpt: str | Path, split: str, device: Any = "cpu") -> Loaded:
    """The split's dataset and ``cfg``'s full method with a training checkpoint's ``model`` state.

    Raises:
        CheckpointError (a ``RuntimeError``): a missing or unreadable file, an exported model, a
            checkpoint without the method's projection head or not matching the method.
    """
    from segproto.engine.builder import build_split, label_space
    from segproto.engine.loading import load_weights_checked
    from segproto.utils.checkpoint import CheckpointError, read_state
    from segproto.methods import build_method

    state = read_state(ckpt)  # before the dataset: a wrong file fails fast
    if isinstance(state, dict) and "segmentor" in state:
        raise CheckpointError(
            f"{ckpt} is an exported model (segmentor weights only, no projection head); the embedding tool "
            "needs a training checkpoint from the work dir (iter_N.pth or best_mIoU_iter_N.pth)")
    if not (isinstance(state, dict) and isinstance(state.get("model"), dict)):
        raise CheckpointError(f"{ckpt} is not a segproto training checkpoint (no 'model' entry)")
    weights = state["model"]
    dataset = build_split(cfg, split, train=False)
    k, names, _ = label_space(dataset, cfg.data.level)
    method = build_method(cfg, k, dataset.taxonomy)
    has_proj = isinstance(getattr(method, "proj", None), nn.Module)
    old_method = ((state.get("meta") or {}).get("config") or {}).get("method", {}).get("name")
    if has_proj and old_method in (None, cfg.method.name):  # another method: named by the check below
        missing = [key for key in method.state_dict() if key.startswith("proj.") and key not in weights]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise CheckpointError(
                f"{ckpt} has no projection-head weights ({shown}) "
                f"for method {cfg.method.name!r}: give a training checkpoint of a {cfg.method.name!r} run with "
                "this config")
    load_weights_checked(method, ckpt, state, cfg, names, by_count=True)  # another method, class count: one line
    return Loaded(dataset, method.to(device).eval(), _iteration(state, ckpt), "proj" if has_proj else "feats")


def pixel_embeddings(method: nn.Module, img: Tensor) -> Tensor:
    """Unit-norm pixel embeddings ``[B, D, h, w]`` at the decoder stride: the projection head's output
    when the method has one, else the L2-normalised decoder features (the training dict's ``feats``,
    here computed in whatever mode the method is in)."""
    seg = method.segmentor
    _, feats = seg.decode_head(seg.backbone(img))  # as Segmentor.forward in training mode
    proj = getattr(method, "proj", None)
    return proj(feats) if isinstance(proj, nn.Module) else F.normalize(feats, p=2.0, dim=1)


def keep_per_class(labels: Tensor, priority: Tensor, per_class: int) -> Tensor:
    """Indices of the ``per_class`` highest-``priority`` entries of every label (all of a label that
    has fewer), ordered by label, then by decreasing priority. ``labels``: ``[N]`` int64 >= 0."""
    order = torch.argsort(priority, descending=True, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]  # by label, priority order within
    lab = labels[order]
    counts = torch.bincount(lab)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(lab.numel()) - starts[lab]  # position within the label's run
    return order[rank < per_class]


class Sample(NamedTuple):
    emb: Tensor  # [N, D] float32
    labels: Tensor  # [N] int64, at the colouring level
    images: Tensor  # [N] int64, index of the point's image in the split
    num_images: int


@torch.no_grad()
def collect(method: nn.Module, loader, per_class: int, seed: int, device: Any, ignore_index: int = 255,
            label_fn: Optional[Callable[[Tensor], Tensor]] = None) -> Sample:
    """Embeds every image of ``loader`` and keeps a uniform sample of at most ``per_class`` labelled
    pixels per class (seeded random priorities, top ``per_class`` per class kept after each batch,
    so memory stays bounded by ``K * per_class`` plus one batch).

    Args:
        label_fn: Maps the fine labels ``[B, h, w]`` (ignore_index kept) to the colouring level.
    """
    from segproto.methods.base import labels_at

    gen = torch.Generator().manual_seed(seed)
    kept: Optional[tuple[Tensor, Tensor, Tensor, Tensor]] = None
    seen = 0
    for batch in loader:
        if "gt" not in batch:
            raise EmbeddingError("the split has no labels: pick a labelled split with --split")
        emb = pixel_embeddings(method, batch["img"].to(device)).float().cpu()  # [B, D, h, w]
        lab = labels_at(batch["gt"].long(), tuple(emb.shape[-2:]))  # [B, h, w]
        if label_fn is not None:
            lab = label_fn(lab)
        img_id = (seen + torch.arange(lab.shape[0]))[:, None, None].expand_as(lab)
        seen += lab.shape[0]
        valid = lab != ignore_index
        new = (emb.permute(0, 2, 3, 1)[valid], lab[valid], img_id[valid],
               torch.rand(int(valid.sum()), generator=gen))
        if kept is not None:
            new = tuple(torch.cat([a, b]) for a, b in zip(kept, new))
        idx = keep_per_class(new[1], new[3], per_class)
        kept = tuple(t[idx] for t in new)
    if kept is None:
        return Sample(torch.zeros(0, 0), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), seen)
    return Sample(kept[0], kept[1], kept[2], seen)


def tsne(x: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE (scikit-learn, PCA init, ``random_state=seed``): ``[N, D]`` -> ``[N, 2]`` float32."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:  # the 'test' / 'all' extras have it
        raise EmbeddingError("the embedding tool needs scikit-learn: pip install scikit-learn") from exc
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
              random_state=seed).fit_transform(np.asarray(x, np.float32))
    return xy.astype(np.float32)


def class_colors(k: int, palette: Optional[Sequence[Sequence[int]]]) -> list[tuple[float, float, float]]:
    """RGB in 0..1: the dataset palette, else a qualitative colormap (tab10/tab20, turbo beyond)."""
    if palette is not None and len(palette) >= k:
        return [tuple(float(v) / 255.0 for v in palette[c][:3]) for c in range(k)]
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]
    pos = range(k) if k <= 20 else np.linspace(0.0, 1.0, k)
    return [tuple(float(v) for v in cmap(p)[:3]) for p in pos]


def draw(out: str | Path, xy: np.ndarray, labels: np.ndarray, names: Sequence[str],
         colors: Sequence[Sequence[float]], title: str, parent: Optional[np.ndarray] = None,
         coarse_names: Optional[Sequence[str]] = None) -> None:
    """Scatter of ``xy [N, 2]`` coloured by ``labels``; with ``parent`` (class -> coarse id) the marker
    shows the coarse class and the legend groups the classes under their coarse class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    present = [int(c) for c in np.unique(labels)]
    counts = np.bincount(labels, minlength=len(names))
    groups: list[tuple[Optional[int], list[int]]]
    if parent is not None:
        groups = [(g, [c for c in present if parent[c] == g]) for g in sorted({int(parent[c]) for c in present})]
    else:
        groups = [(None, present)]
    fig = Figure(figsize=(8, 6.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    size = float(np.clip(4000.0 / max(len(labels), 1), 4.0, 25.0))  # smaller points for dense pictures
    handles, headers = [], []
    for g, members in groups:
        marker = MARKERS[g % len(MARKERS)] if g is not None else "o"
        if g is not None:
            headers.append(len(handles))
            handles.append(Line2D([], [], linestyle="none", marker="", label=str(coarse_names[g])))
        for c in members:
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=colors[c], marker=marker, linewidths=0, alpha=0.85)
            handles.append(Line2D([], [], linestyle="none", marker=marker, markersize=5, markeredgewidth=0,
                                  markerfacecolor=colors[c], label=f"{'  ' if g is not None else ''}{names[c]} "
                                                                   f"({counts[c]})"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6, frameon=False,
                       ncol=max(1, math.ceil(len(handles) / 45)), handletextpad=0.3, borderaxespad=0.0)
    for i in headers:
        legend.get_texts()[i].set_fontweight("bold")
    fig.savefig(out, dpi=150, bbox_inches="tight")


def _fail(msg: str, code: int):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def _parse(argv) -> argparse.Namespace:
    """The command line, with every option checked (bad values: usage error, exit 2)."""
    p = argparse.ArgumentParser(prog="python -m segproto.tools.embeddings",
                                description="t-SNE picture of a checkpoint's pixel embeddings, coloured by class "
                                            "(docs/training.md, 'Embedding pictures').")
    add_config_args(p)
    p.add_argument("checkpoint", help="training checkpoint (iter_N.pth / best_mIoU_iter_N.pth), not an exported model")
    p.add_argument("--out", required=True, help="the picture (.png); the coordinates go next to it as .json")
    p.add_argument("--split", help="dataset split (default: data.val_split)")
    p.add_argument("--num-images", type=int, default=50, help="first N images of the split (default 50)")
    p.add_argument("--per-class", type=int, default=200, help="at most this many pixels per class (default 200)")
    p.add_argument("--level", type=int, default=0, help="taxonomy level that colours the points (0 = finest)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity, < number of points (30)")
    p.add_argument("--seed", type=int, default=0, help="pixel sampling and t-SNE seed (0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--force", action="store_true", help="replace an existing --out picture and its .json")
    add_debug_arg(p)
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.suffix.lower() != ".png":
        p.error(f"--out {a.out}: unsupported suffix {out.suffix or '(none)'!r}; the picture is a PNG, "
                "give a path ending in .png (the coordinates go next to it as .json)")
    for name, value in (("--num-images", a.num_images), ("--per-class", a.per_class)):
        if value < 1:
            p.error(f"{name} must be >= 1, got {value}")
    if not a.perplexity > 0:
        p.error(f"--perplexity must be > 0, got {a.perplexity}")
    try:
        a.device = torch.device(a.device)
    except RuntimeError as exc:
        p.error(f"--device {a.device!r}: {exc}")
    if a.device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {a.device}: CUDA is not available here (use --device cpu)")
    return a


class _Colouring(NamedTuple):
    """What colours and marks the points: class names and palette of the level, the label mapping
    to it, and the coarsest level (marker) when the level is not already the coarsest."""

    names: list
    palette: Optional[Sequence[Sequence[int]]]
    level_name: Optional[str]
    label_fn: Optional[Any]
    parent: Optional[np.ndarray]
    coarse_names: Optional[list]


def _colouring(dataset, level: int, ignore: int) -> _Colouring:
    tax = dataset.taxonomy
    if tax is None:
        if level != 0:
            _fail(f"--level {level}: the dataset has no taxonomy (only level 0)", 2)
        return _Colouring(list(dataset.classes), dataset.palette, None, None, None, None)
    if not 0 <= level < tax.num_levels:
        _fail(f"--level {level}: the taxonomy has levels 0..{tax.num_levels - 1} {tax.level_names}", 2)
    coarse = level < tax.num_levels - 1
    return _Colouring(
        tax.class_names(level) if level else list(dataset.classes),
        tax.palette(level) if level else dataset.palette,
        tax.level_names[level],
        (lambda lab: tax.map_labels(lab, 0, level, ignore)) if level else None,
        tax.parent_map(level, -1) if coarse else None,
        tax.class_names(-1) if coarse else None,
    )


def _record(a: argparse.Namespace, cfg: Any, loaded: Loaded, sample, split: str, col: _Colouring,
            colors: list, xy: np.ndarray, labels: np.ndarray) -> dict:
    """The JSON written next to the picture: settings, classes, colours and every point."""
    return {
        "settings": {"config": str(a.config), "checkpoint": str(a.checkpoint), "iteration": loaded.iteration,
                     "method": cfg.method.name, "embedding": loaded.source, "dim": int(sample.emb.shape[1]),
                     "split": split, "num_images": sample.num_images, "per_class": a.per_class, "level": a.level,
                     "level_name": col.level_name, "perplexity": a.perplexity, "seed": a.seed,
                     "cfg_options": list(a.cfg_options)},
        "classes": list(col.names),
        "colors": [list(c) for c in colors],
        "coarse_classes": None if col.coarse_names is None else list(col.coarse_names),
        "parent": None if col.parent is None else [int(v) for v in col.parent],
        "coords": xy.astype(float).tolist(),
        "labels": labels.tolist(),
        "coarse_labels": None if col.parent is None else col.parent[labels].tolist(),
        "images": sample.images.tolist(),
    }


def main(argv=None) -> int:
    a = _parse(argv)
    cfg = load_or_exit(a.config, a.cfg_options, a.debug)
    code = run_or_exit(lambda: _picture(a, cfg), a.debug)
    if code:
        sys.exit(code)  # as every other error of this tool (see _fail)
    return 0


def _picture(a: argparse.Namespace, cfg: Any) -> int:
    out = output_path(a.out, "--out", a.force)
    output_path(out.with_suffix(".json"), "--out (its .json)", a.force)
    split = a.split or cfg.data.val_split
    loaded = load_training_method(cfg, a.checkpoint, split, a.device)  # CheckpointError, DatasetError: exit 1
    dataset = loaded.dataset
    col = _colouring(dataset, a.level, cfg.data.ignore_index)

    from torch.utils.data import Subset

    from segproto.engine.builder import eval_loader

    subset = Subset(dataset, range(min(a.num_images, len(dataset))))
    try:
        sample = collect(loaded.method, eval_loader(subset, cfg), a.per_class, a.seed, a.device,
                         cfg.data.ignore_index, col.label_fn)
    except (EmbeddingError, ValueError) as exc:
        _fail(str(exc), 1)
    n = int(sample.labels.numel())
    if n <= a.perplexity or n < 2:
        _fail(f"{n} labelled points (at most {a.per_class} per class from {sample.num_images} images of "
              f"split {split!r}) but t-SNE needs more points than the perplexity ({a.perplexity:g}): lower "
              "--perplexity or raise --num-images / --per-class", 1)
    try:
        xy = tsne(sample.emb.numpy(), a.perplexity, a.seed)
    except EmbeddingError as exc:
        _fail(str(exc), 1)

    labels = sample.labels.numpy()
    colors = class_colors(len(col.names), col.palette)
    source = "projection head" if loaded.source == "proj" else "decoder features"
    it = "?" if loaded.iteration is None else loaded.iteration
    marker = f", marker: {dataset.taxonomy.level_names[-1]}" if col.parent is not None else ""
    title = (f"{Path(a.config).stem} ({cfg.method.name})  |  iter {it}  |  {n} points\n"
             f"{source} (D={sample.emb.shape[1]}), split {split}, {sample.num_images} images, "
             f"colour: {col.level_name or 'class'}{marker}, perplexity {a.perplexity:g}, seed {a.seed}")
    draw(out, xy, labels, col.names, colors, title, col.parent, col.coarse_names)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(_record(a, cfg, loaded, sample, split, col, colors, xy, labels)))
    print(f"{n} points, {len(np.unique(labels))} classes, {sample.num_images} images -> {out}, {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
