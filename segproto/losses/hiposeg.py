"""HiPoSeg loss terms: pixel-to-prototype, prototype-to-prototype and hierarchy alignment.

Pure functions of unit-norm embeddings and prototypes (no state); the prototype buffers, the
taxonomy and the staged schedule live in :class:`segproto.methods.hiposeg.HiPoSegMethod`.
Formulas (``docs/methods/hiposeg.md``), for one level with prototypes ``q [K, D]``::

    L_pix   = mean_i CE( softmax_k(f_i . q[k] / tau), y_i )               # L_fh / L_fl
    L_proto = mean_a log sum_b exp((q[a] . q[b] - 1) / kappa)             # L_hh / L_ll
    L_align = mean_c relu(||q_child[c] - q_parent[parent(c)]|| - sigma1)
            + mean_{a != b} relu(sigma2 - ||q_parent[a] - q_parent[b]||)

Only *valid* prototypes take part: a class present in the batch (its online prototype) or one
whose buffer has been set; a class never seen has no prototype and is left out of every term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from segproto import ops

__all__ = ["online_prototypes", "pixel_prototype_loss", "prototype_separation_loss", "hierarchy_alignment_loss"]


def online_prototypes(protos: Tensor, feats: Tensor, labels: Tensor, momentum: float,
                      ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Prototypes for the loss: ``normalize(m P[c] + (1 - m) normalize(mean_c f))`` for classes in
    the batch (carrying gradient to ``feats``), ``P[c]`` (no gradient) for the others.

    Args:
        protos: ``[K, D]`` prototype buffer (rows of zeros are unset); not modified, not differentiated.
        feats: ``[N, D]`` unit-norm embeddings (float32/float64).
        labels: ``[N]`` int64 class ids of this level, ``ignore_index`` for unlabelled pixels.
        momentum: m in [0, 1].

    Returns:
        ``q [K, D]`` (feats' dtype) and ``valid [K]`` bool (present in the batch or set before).
    """
    k = protos.shape[0]
    p = protos.detach().to(feats.dtype).clone()  # the buffer is updated in place after the loss
    sums, counts = ops.class_sums(feats, labels, k, ignore_index)  # differentiable in feats
    present = counts > 0
    mu = F.normalize(sums.to(feats.dtype) / counts.clamp_min(1).unsqueeze(1).to(feats.dtype), dim=1)
    blended = F.normalize(momentum * p + (1.0 - momentum) * mu, dim=1)
    q = torch.where(present.unsqueeze(1), blended, p)
    return q, present | (p != 0).any(dim=1)


def pixel_prototype_loss(feats: Tensor, labels: Tensor, q: Tensor, valid: Tensor, tau: float,
                         ignore_index: int = 255) -> Tensor:
    """``mean_i CE(softmax_k(f_i . q[k] / tau), y_i)`` over labelled pixels (0 if there are none).

    Args:
        feats: ``[N, D]`` unit-norm embeddings. labels: ``[N]`` (every labelled class is valid).
        q: ``[K, D]`` prototypes. valid: ``[K]`` bool; invalid classes are left out of the softmax.
        tau: temperature.
    """
    keep = labels != ignore_index
    if not bool(keep.any()):
        return feats.sum() * 0.0
    logits = (feats[keep] @ q.t()) / tau  # [N', K]
    logits = logits.masked_fill(~valid.unsqueeze(0), float("-inf"))
    return F.cross_entropy(logits, labels[keep])


def prototype_separation_loss(q: Tensor, valid: Tensor, kappa: float) -> Tensor:
    """``mean_a log sum_b exp((q[a] . q[b] - 1) / kappa)`` over valid prototypes (b = a included,
    so the loss is >= 0 and 0 only when the prototypes are mutually orthogonal at kappa -> 0)."""
    qv = q[valid]
    if qv.shape[0] == 0:
        return q.sum() * 0.0
    return torch.logsumexp((qv @ qv.t() - 1.0) / kappa, dim=1).mean()


def _pair_dist(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances with a gradient that stays finite at 0 (identical vectors)."""
    sq = ((a - b) ** 2).sum(-1)
    return torch.where(sq > 0, sq.clamp_min(1e-30).sqrt(), torch.zeros_like(sq))


def hierarchy_alignment_loss(q_child: Tensor, valid_child: Tensor, q_parent: Tensor, valid_parent: Tensor,
                             parent: Tensor, sigma1: float, sigma2: float) -> Tensor:
    """``mean_c relu(||q_child[c] - q_parent[parent(c)]|| - sigma1)``
    ``+ mean_{a != b} relu(sigma2 - ||q_parent[a] - q_parent[b]||)``, over valid prototypes.

    Args:
        q_child: ``[K_c, D]``. valid_child: ``[K_c]`` bool. q_parent: ``[K_p, D]``. valid_parent: ``[K_p]``.
        parent: ``[K_c]`` int64, the parent id of every child class.
        sigma1, sigma2: margins.
    """
    pair = valid_child & valid_parent[parent]
    zero = (q_child.sum() + q_parent.sum()) * 0.0
    near = zero
    if bool(pair.any()):
        near = F.relu(_pair_dist(q_child[pair], q_parent[parent[pair]]) - sigma1).mean()
    qp = q_parent[valid_parent]
    far = zero
    if qp.shape[0] > 1:
        off = ~torch.eye(qp.shape[0], dtype=torch.bool, device=qp.device)
        dist = _pair_dist(qp.unsqueeze(1), qp.unsqueeze(0))  # [K', K']
        far = F.relu(sigma2 - dist[off]).mean()
    return near + far
