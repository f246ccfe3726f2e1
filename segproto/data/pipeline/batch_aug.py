"""Batch augmentations of the semi-supervised framework, on normalised image tensors on the device.

The strong view of an unlabelled batch (``docs/methods/prcl.md``): ClassMix across the batch, then
per-image colour jitter and Gaussian blur (torchvision's functional ops, parameters drawn from a
seeded generator so a resumed run draws what the uninterrupted run drew).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

__all__ = ["class_mix", "photometric"]


def class_mix(img: Tensor, labels: Tensor, extra: Sequence[Tensor], generator: torch.Generator,
              ignore_index: int = 255) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """ClassMix: image ``b`` takes the pixels of half (rounded up) of the classes present in image
    ``b - 1``'s labels (the partner; the batch is rolled by one), chosen at random.

    Args:
        img: ``[B, C, H, W]``. labels: ``[B, H, W]`` int64 (pseudo-labels; ``ignore_index`` never pasted).
        extra: Per-pixel maps ``[B, H, W]`` mixed with the same mask (e.g. confidences).
        generator: Draws the class choices.

    Returns:
        Mixed image, labels, extra maps, and the paste mask ``[B, H, W]`` bool.
    """
    b = img.shape[0]
    if b < 2:
        return img, labels, list(extra), torch.zeros_like(labels, dtype=torch.bool)
    partner = torch.roll(torch.arange(b, device=img.device), 1)
    src = labels[partner]  # [B, H, W]
    k = int(labels[labels != ignore_index].max()) + 1 if bool((labels != ignore_index).any()) else 1
    present = torch.zeros(b, k + 1, dtype=torch.bool, device=img.device)
    present.scatter_(1, torch.where(src == ignore_index, k, src).flatten(1), True)
    present[:, k] = False
    prio = torch.rand(b, k + 1, generator=generator, device=generator.device).to(img.device)
    prio = torch.where(present, prio, torch.full_like(prio, 2.0))  # absent classes sort last
    rank = prio.argsort(1).argsort(1)  # rank of each class among the image's classes
    chosen = rank < ((present.sum(1, keepdim=True) + 1) // 2)  # [B, K + 1]
    mask = torch.gather(chosen, 1, torch.where(src == ignore_index, k, src).flatten(1)).view_as(src)

    def mix(a: Tensor) -> Tensor:  # [B, ..., H, W]: partner's pixels where the mask is set
        m = mask.view(b, *([1] * (a.dim() - 3)), *mask.shape[1:])
        return torch.where(m, a[partner], a)

    return mix(img), mix(labels), [mix(x) for x in extra], mask


def photometric(img: Tensor, mean: Sequence[float], std: Sequence[float], generator: torch.Generator,
                jitter: float = 0.25, jitter_p: float = 0.8, blur_p: float = 0.5,
                blur_sigma: tuple[float, float] = (0.1, 2.0)) -> Tensor:
    """Per-image colour jitter (brightness, contrast, saturation factors in ``[1 - jitter, 1 + jitter]``,
    hue shift in ``[-jitter / 2, jitter / 2]``, applied with probability ``jitter_p``) then Gaussian
    blur (sigma uniform in ``blur_sigma``, probability ``blur_p``), on ``img [B, 3, H, W]`` normalised
    with ``mean``/``std`` (0..255 units); returns the same normalisation."""
    b = img.shape[0]
    m = torch.tensor(mean, device=img.device).view(1, 3, 1, 1) / 255.0
    s = torch.tensor(std, device=img.device).view(1, 3, 1, 1) / 255.0
    x = (img * s + m).clamp(0, 1)
    u = torch.rand(b, 7, generator=generator, device=generator.device).cpu().double()  # every draw taken
    out = []
    for i in range(b):
        y = x[i]
        if u[i, 0] < jitter_p:
            f = 1 - jitter + 2 * jitter * u[i, 1:4]
            y = TF.adjust_brightness(y, float(f[0]))
            y = TF.adjust_contrast(y, float(f[1]))
            y = TF.adjust_saturation(y, float(f[2]))
            y = TF.adjust_hue(y, float(jitter * (u[i, 4] - 0.5)))
        if u[i, 5] < blur_p:
            sigma = blur_sigma[0] + (blur_sigma[1] - blur_sigma[0]) * float(u[i, 6])
            size = 2 * max(1, round(2 * sigma)) + 1  # covers +-2 sigma
            size = min(size, 2 * (min(y.shape[-2:]) // 2) - 1)
            y = TF.gaussian_blur(y, [size, size], [sigma, sigma])
        out.append(y)
    return (torch.stack(out) - m) / s
