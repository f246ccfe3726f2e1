"""PiCo: cross-image pixel contrast (the segmentor + a projection head + optional memories).

The pure loss pieces are in :mod:`segproto.losses.pico`; this module holds the state (projection
head, pixel and region memories), the schedule (warm-up) and the seeded, vectorised sampling that
feeds them. Formulas, keys and deviations: ``docs/methods/pico.md``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segproto import ops
from segproto.config.sections.pico import ContrastLossConfig
from segproto.losses.pico import AnchorSample, memory_bank_contrast_loss, sample_hard_anchors, sampled_contrast_loss
from segproto.models import ProjectionHead, Segmentor, build_segmentor

from .base import SegMethod, labels_at, resize_logits
from .protocol import register_method

__all__ = ["ClassMemory", "PiCoMethod", "step_seed"]

_NO_LABEL = -1  # ignore value for the ops' internal labels (never collides with a class or b * K + c)


def _dist():
    """:mod:`segproto.utils.dist`."""
    from segproto.utils import dist

    return dist


def step_seed(seed: int, it: int, rank: int) -> int:
    """The sampling seed of one training step: a function of (config seed, iteration, rank) only,
    so a resumed run draws exactly what the uninterrupted run drew."""
    return ((seed * 1_000_003 + it) * 4_099 + rank) % (2**63 - 1)


class ClassMemory(nn.Module):
    """A per-class ring buffer of unit vectors (``segproto.ops.memory_bank_push_``).

    Buffers (saved in checkpoints): ``bank [K, M, D]``, ``ptr [K]`` (next slot), ``count [K]``
    (filled slots; slots ``>= count[c]`` were never written and are never read).
    """

    def __init__(self, num_classes: int, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("bank", torch.zeros(num_classes, size, dim))
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.bank.shape[1]

    @torch.no_grad()
    def push_(self, feats: Tensor, labels: Tensor) -> None:
        """Appends L2-normalised ``feats [N, D]`` to the rings of ``labels [N]`` (in row order)."""
        ops.memory_bank_push_(self.bank, self.ptr, self.count, feats, labels, ignore_index=_NO_LABEL)

    def filled(self) -> tuple[Tensor, Tensor]:
        """A copy of the written slots: rows ``[F, D]`` and their classes ``[F]`` (class-major)."""
        k, m, _ = self.bank.shape
        mask = torch.arange(m, device=self.bank.device) < self.count.unsqueeze(1)  # [K, M]
        classes = torch.arange(k, device=self.bank.device).unsqueeze(1).expand(k, m)
        return self.bank[mask], classes[mask]

    def fill_fraction(self) -> Tensor:
        """``count / M`` per class, ``[K]`` float."""
        return self.count.float() / self.size


@register_method("pico")
class PiCoMethod(SegMethod):
    """Cross-entropy + PiCo pixel contrast on the decoder features (training-only extras).

    Args:
        segmentor: The deployed model; its training dict gives ``logits`` and ``feats``.
        num_classes: K.
        contrast: The ``loss.contrast`` section.
        ignore_index, ce_weight, class_weight: As :class:`SegMethod`.
        seed: Base seed of the per-step sampling generator (see :func:`step_seed`).
    """

    def __init__(self, segmentor: Segmentor, num_classes: int, contrast: Optional[ContrastLossConfig] = None,
                 ignore_index: int = 255, ce_weight: float = 1.0, class_weight: Optional[list[float]] = None,
                 seed: int = 0) -> None:
        super().__init__(segmentor, num_classes, ignore_index, ce_weight, class_weight)
        c = contrast if contrast is not None else ContrastLossConfig()
        self.contrast_cfg = c
        self.seed = seed
        self.proj = ProjectionHead(segmentor.feat_channels, c.proj_dim, c.proj_kind)
        self.pixel_memory: Optional[ClassMemory] = None
        self.region_memory: Optional[ClassMemory] = None
        if c.memory:
            self.pixel_memory = ClassMemory(num_classes, c.memory_size, c.proj_dim)
            self.region_memory = ClassMemory(num_classes, c.region_memory_size, c.proj_dim)
            # Every rank pushes the same all-gathered rows, so the memories are identical by
            # construction: DDP need not broadcast them (100s of MB) at every forward.
            self._ddp_params_and_buffers_to_ignore = [
                f"{m}.{b}" for m in ("pixel_memory", "region_memory") for b in ("bank", "ptr", "count")]
        self._generators: dict[str, torch.Generator] = {}
        # Fixed-shape anchors (padded to max_samples, no host sync): None = everywhere but the CPU.
        self.fixed_shape: Optional[bool] = None
        self._loss_workspace: dict = {}  # CPU scratch buffers of memory_bank_contrast_loss (not state)

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, taxonomy=None) -> "PiCoMethod":
        return cls(build_segmentor(cfg.model, num_classes), num_classes, cfg.loss.contrast, cfg.data.ignore_index,
                   cfg.loss.ce.weight, cfg.loss.ce.class_weight, seed=cfg.seed)

    # ------------------------------------------------------------------ helpers
    def generator(self, it: int, device: torch.device) -> torch.Generator:
        """This step's sampling generator on ``device`` (re-seeded with :func:`step_seed`)."""
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device)
        return self._generators[key].manual_seed(step_seed(self.seed, it, _dist().rank()))

    def targets_at(self, logits: Tensor, gt: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Labels (nearest) and predictions (argmax of bilinearly resized logits) at the embedding size.

        Args:
            logits: [B, K, h', w'] training logits. gt: [B, H, W]. size: the embedding's (h, w).

        Returns:
            labels [B, h, w] int64, preds [B, h, w] int64 (no gradient).
        """
        with torch.no_grad():
            preds = resize_logits(logits.detach().float(), size).argmax(1)
        return labels_at(gt, size), preds

    def sample_anchors(self, emb: Tensor, labels: Tensor, preds: Tensor, gen: torch.Generator) -> AnchorSample:
        """Segmentation-aware hard anchors (``emb [B, N, D]``, ``labels``/``preds`` ``[B, N]``)."""
        c = self.contrast_cfg
        return sample_hard_anchors(emb, labels, preds, self.num_classes, c.max_samples, c.max_views,
                                   self.ignore_index, gen, self.fixed_shape)

    def memory_rows(self, keys: Tensor, labels: Tensor, gen: torch.Generator) -> tuple[Tensor, ...]:
        """What this step pushes: V random pixels per (image, class) and each (image, class) mean.

        Fixed shapes (a row for every (image, class) slot, class -1 where there is nothing to push,
        which :meth:`ClassMemory.push_` skips), so the update never waits on the device. The labels
        are not checked again: :meth:`extra_losses` has checked them in :meth:`sample_anchors`.

        Args:
            keys: [B, N, D] detached embeddings before their normalisation (the pushes normalise
                the pixel rows; the region sums add normalised rows). labels: [B, N] int64.

        Returns:
            (pixel rows [B * K * V, D], their classes [B * K * V], region sums [B * K, D], their
            classes [B * K]); rows in (image, class, draw) order; region sums are sums of the
            normalised embeddings, i.e. un-normalised means (the push normalises them).
        """
        b, n, d = keys.shape
        k, v = self.num_classes, self.contrast_cfg.pixels_per_class
        dev = labels.device
        table = ops.sample_per_class_dense(labels, v, k, self.ignore_index, gen, check=False)  # [B, K, V]
        image = torch.arange(b, device=dev).view(b, 1)
        keys = keys.reshape(b * n, d)  # one contiguous copy (keys is a transposed view), read twice
        rows = keys.index_select(
            0, torch.where(table >= 0, table + image.unsqueeze(2) * n, 0).reshape(-1))
        cls = torch.where(table >= 0, torch.arange(k, device=dev).view(1, k, 1), _NO_LABEL).reshape(-1)
        region = torch.where(labels != self.ignore_index, labels + image * k, _NO_LABEL)
        sums, counts = ops.class_sums(keys, region.reshape(-1), b * k, ignore_index=_NO_LABEL,
                                      normalize=True)
        reg_cls = torch.where(counts > 0, torch.arange(b * k, device=dev) % k, _NO_LABEL)
        return rows, cls, sums, reg_cls

    @torch.no_grad()
    def update_memory(self, keys: Tensor, labels: Tensor, gen: torch.Generator) -> None:
        """Pushes this step's rows; under DDP every rank pushes every rank's rows (rank order)."""
        px, px_cls, reg, reg_cls = (_dist().all_gather_cat(t) for t in self.memory_rows(keys, labels, gen))
        self.pixel_memory.push_(px, px_cls)
        self.region_memory.push_(reg, reg_cls)

    def contrast_loss(self, sample: AnchorSample, gen: torch.Generator) -> Tensor:
        """The unweighted PiCo loss of the anchors against the memories (or against each other).

        With memories, ``sampling: all`` and no synthesis (the paper's memory version), the value
        of the masked path below is computed by :func:`memory_bank_contrast_loss` on the class-major
        banks (no ``[N, F]`` masks, gradient formed with the value; tested equal)."""
        c = self.contrast_cfg
        contrast = contrast_labels = None
        if self.pixel_memory is not None and c.sampling == "all" and c.synth_neg_neg + c.synth_neg_anchor == 0:
            mems = (self.pixel_memory, self.region_memory)  # copied inside: the pushes come later
            return memory_bank_contrast_loss(sample.feats, sample.labels, [m.bank for m in mems], [m.count for m in mems],
                                        c.temperature, c.base_temperature, self.ignore_index,
                                        workspace=self._loss_workspace)
        if self.pixel_memory is not None:
            rows = [self.pixel_memory.filled(), self.region_memory.filled()]  # copies: pushes come later
            contrast = torch.cat([r[0] for r in rows])
            contrast_labels = torch.cat([r[1] for r in rows])
        return sampled_contrast_loss(
            sample.feats, sample.labels, contrast, contrast_labels, temperature=c.temperature,
            base_temperature=c.base_temperature, sampling=c.sampling, hard_k=c.hard_k,
            semi_hard_frac=c.semi_hard_frac, synth_neg_neg=c.synth_neg_neg, synth_neg_anchor=c.synth_neg_anchor,
            alpha_max=c.alpha_max, generator=gen, ignore_index=self.ignore_index)

    # ------------------------------------------------------------------ the method
    def extra_losses(self, out: dict, gt: Tensor, it: int) -> dict[str, Tensor]:
        """``loss_contrast`` (0 up to ``warmup_iters``) and diagnostics (scalar tensors).

        Diagnostics: ``hard_frac`` (share of hard anchors), ``num_anchors``, and with memory
        ``queue_fill`` / ``queue_fill_min`` (pixel memory, mean / min over classes of count / M)
        and ``region_fill`` (region memory, mean).
        """
        c = self.contrast_cfg
        # embeddings before the normalisation: only the drawn anchors are normalised (with autograd),
        # the memory rows inside the compiled ops; the same values as normalising the whole map
        # first, without its full-size backward (docs/methods/pico.md, "Overhead")
        emb = self.proj(out["feats"], normalize=False)  # [B, D, h, w]
        labels, preds = self.targets_at(out["logits"], gt, tuple(emb.shape[-2:]))  # [B, h, w] each
        flat = emb.flatten(2).transpose(1, 2)  # [B, h*w, D]
        gen = self.generator(it, emb.device)
        sample = self.sample_anchors(flat, labels.flatten(1), preds.flatten(1), gen)
        sample = sample._replace(feats=F.normalize(sample.feats, p=2.0, dim=1))
        if it > c.warmup_iters and c.weight > 0:
            loss = c.weight * self.contrast_loss(sample, gen)
        else:  # zero, but keeps the projection head in the graph (DDP without unused parameters)
            loss = emb.sum() * 0.0
        diag = {"hard_frac": sample.hard_frac.detach(),
                "num_anchors": (sample.labels != self.ignore_index).sum().float()}
        if self.pixel_memory is not None:
            self.update_memory(flat.detach(), labels.flatten(1), gen)
            fill = self.pixel_memory.fill_fraction()
            diag.update(queue_fill=fill.mean(), queue_fill_min=fill.min(),
                        region_fill=self.region_memory.fill_fraction().mean())
        return {"loss_contrast": loss, **diag}
