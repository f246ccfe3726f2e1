"""PRCL's distribution prototypes: precision-weighted class distributions of a batch, the global
distribution prototype (GDP) update, and virtual negatives drawn from the GDPs. Pure functions: the
GDP buffers (``gdp_mu [K, D]``, ``gdp_prec [K, D]``, zero = empty) live in the method."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from segproto import ops

from .prcl_mls import compute_dtype

__all__ = ["BatchPrototypes", "distribution_prototypes", "gdp_update", "virtual_negatives"]


class BatchPrototypes(NamedTuple):
    """Precision-weighted class distributions of one batch (rows of absent classes are zero)."""

    mu: Tensor  # [K, D] var_c * sum_i mu_i / var_i (raw mu)
    var: Tensor  # [K, D] 1 / sum_i 1 / var_i
    prec_sum: Tensor  # [K, D] sum_i 1 / var_i      (all-reduce these two under DDP,
    mu_prec_sum: Tensor  # [K, D] sum_i mu_i / var_i   then pass them to gdp_update)
    counts: Tensor  # [K] int64


def distribution_prototypes(mu: Tensor, var: Tensor, labels: Tensor, num_classes: int,
                            ignore_index: int = 255) -> BatchPrototypes:
    """Batch distribution prototypes from one ``ops.class_sums`` call on ``[1/var, mu/var]``.

    Args:
        mu, var: [N, D] pixel means and variances (> 0). labels: [N] int64.

    Returns:
        :class:`BatchPrototypes` in float32 (float64 for float64 input), differentiable w.r.t.
        mu and var.
    """
    dt = compute_dtype(mu)
    d = mu.shape[1]
    inv = var.to(dt).reciprocal()
    sums, counts = ops.class_sums(torch.cat([inv, mu.to(dt) * inv], 1), labels, num_classes, ignore_index)
    sums = sums.to(dt)
    prec, mu_prec = sums[:, :d], sums[:, d:]
    present = (counts > 0).unsqueeze(1)
    safe = torch.where(present, prec, torch.ones_like(prec))
    zero = torch.zeros_like(prec)
    return BatchPrototypes(torch.where(present, mu_prec / safe, zero), torch.where(present, 1.0 / safe, zero),
                           prec, mu_prec, counts)


def gdp_update(mu_g: Tensor, prec_g: Tensor, sums_prec: Tensor, sums_mu_prec: Tensor,
               decay: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """Bayesian precision addition of a batch into the global distribution prototypes.

    ``prec' = decay * prec + sums_prec``; ``mu' = (decay * prec * mu + sums_mu_prec) / prec'`` for
    classes with new pixels (``sums_prec > 0``); other classes keep ``mu`` (and, with a decay,
    lose precision: an unseen class slowly becomes uncertain again, never empty).
    ``decay=None`` (or 1.0) is the paper's plain addition. Buffers start EMPTY (``prec = 0``:
    the class has no GDP until it is first seen). Inputs are not modified.

    Args:
        mu_g, prec_g: [K, D] current GDP mean and per-dimension precision (1 / var_g).
        sums_prec, sums_mu_prec: [K, D] ``BatchPrototypes.prec_sum`` / ``.mu_prec_sum``
            (all-reduced under DDP). No gradient is taken.
        decay: in (0, 1], or None.

    Returns:
        (mu_g', prec_g') in the dtypes of mu_g / prec_g (computed in float64).
    """
    if decay is not None and not 0.0 < decay <= 1.0:
        raise ValueError(f"gdp_update: decay must be in (0, 1] or None, got {decay}")
    with torch.no_grad():
        mu, prec = mu_g.double(), prec_g.double()
        sp, smp = sums_prec.double(), sums_mu_prec.double()
        if decay is not None:
            prec = prec * decay
        new_prec = prec + sp
        seen = sp > 0
        new_mu = torch.where(seen, (prec * mu + smp) / torch.where(seen, new_prec, torch.ones_like(new_prec)), mu)
    return new_mu.to(mu_g.dtype), new_prec.to(prec_g.dtype)


def virtual_negatives(gdp_mu: Tensor, gdp_prec: Tensor, num_samples: int, radius: float = 1.0,
                      generator: Optional[torch.Generator] = None) -> Tensor:
    """``mu_g + radius * eps * sqrt(var_g)``, ``var_g = 1 / prec_g``, ``eps ~ N(0, I)``.

    Args:
        gdp_mu, gdp_prec: [K, D]. Classes without a GDP (``prec = 0``) get ``mu_g`` (no noise);
            mask them out (they are not negatives of anything).
        num_samples: S per class.

    Returns:
        [K, S, D] (no gradient).
    """
    with torch.no_grad():
        dt = compute_dtype(gdp_mu)
        mu, prec = gdp_mu.to(dt), gdp_prec.to(dt)
        std = torch.where(prec > 0, prec.clamp_min(torch.finfo(dt).tiny).rsqrt(), torch.zeros_like(prec))
        eps = torch.randn((mu.shape[0], num_samples, mu.shape[1]), generator=generator, device=mu.device, dtype=dt)
        return mu.unsqueeze(1) + radius * eps * std.unsqueeze(1)
