"""The PRCL contrastive loss: anchors and negatives drawn by :mod:`segproto.losses.prcl`, scored
with the mutual likelihood score against real and virtual negatives (``docs/methods/prcl.md``).
Pure functions: the GDP buffers live in the method."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from segproto.labels import check_labels

from .prcl import _anchor_pool, _anchors_from_pool, _class_pool, _negatives_from_pool, negative_class_probs
from .prcl_mls import compute_dtype, mutual_likelihood_score_indexed
from .prcl_prototypes import BatchPrototypes, distribution_prototypes, virtual_negatives

__all__ = ["NEGATIVE_PROTOS", "PRCLSample", "prcl_logits", "prcl_loss", "prcl_sample"]

NEGATIVE_PROTOS = ("global", "batch")


class PRCLSample(NamedTuple):
    """Everything :func:`prcl_loss` drew, so an oracle can recompute the loss from it."""

    classes: Tensor  # [C] int64 anchor classes (ascending)
    anchors: Tensor  # [C, A] int64 pixel indices (hard pixels of the class)
    negatives: Tensor  # [C, A, M] int64 pixel indices (0 where the class has no real negative)
    negative_classes: Tensor  # [C, A, M] int64 (-1 where none)
    has_real: Tensor  # [C] bool: another class has valid pixels in the batch
    virtual: Tensor  # [C, K, V, D] virtual negatives drawn from the GDPs
    virtual_mask: Tensor  # [C, K] bool: class k has a GDP and k != classes[c]
    class_probs: Tensor  # [C, K] negative-class distribution used


def _gdp_var(gdp_prec: Tensor, dt: torch.dtype) -> tuple[Tensor, Tensor]:
    prec = gdp_prec.to(dt)
    has = (prec > 0).all(1)
    return torch.where(has.unsqueeze(1), 1.0 / torch.where(prec > 0, prec, torch.ones_like(prec)),
                       torch.ones_like(prec)), has  # placeholder var 1 where there is no GDP


def prcl_sample(mu: Tensor, var: Tensor, labels: Tensor, probs: Tensor, gdp_mu: Tensor, gdp_prec: Tensor, *,
                num_anchors: int = 256, num_negatives: int = 512, temperature: float = 100.0,
                weak_threshold: float = 0.8, num_virtual: int = 1, virtual_radius: float = 1.0,
                negative_protos: str = "global", anchor_fallback: bool = False,
                batch_protos: Optional[BatchPrototypes] = None, generator: Optional[torch.Generator] = None,
                ignore_index: int = 255) -> PRCLSample:
    """All of :func:`prcl_loss`'s random draws (arguments as there), under no_grad.

    A class takes part when it has valid pixels, a GDP (``prec > 0``), anchors (hard pixels, or
    any with ``anchor_fallback``) and at least one negative (another class in the batch, or a
    virtual negative of another class with a GDP). Draw order on ``generator``: anchors, negative
    classes, negative pixels, virtual negatives.
    """
    if negative_protos not in NEGATIVE_PROTOS:
        raise ValueError(f"prcl: negative_protos must be one of {NEGATIVE_PROTOS}, got {negative_protos!r}")
    with torch.no_grad():
        k, d = gdp_mu.shape
        dt = compute_dtype(mu)
        dev = mu.device
        valid = labels != ignore_index
        check_labels(labels, k, ignore_index, "prcl")
        vpool = _class_pool(labels, valid, k, split=probs < weak_threshold)  # hard pixels first
        present = vpool.count > 0
        gdp_var, has_gdp = _gdp_var(gdp_prec, dt)
        gmu = gdp_mu.to(dt)
        if negative_protos == "batch" or bool((present & ~has_gdp).any()):
            if batch_protos is None:
                batch_protos = distribution_prototypes(mu, var, labels, k, ignore_index)
            bmu, bvar = batch_protos.mu.to(dt), batch_protos.var.to(dt).clamp_min(torch.finfo(dt).tiny)
            if negative_protos == "global":  # present classes without a GDP use their batch prototype
                bmu = torch.where(has_gdp.unsqueeze(1), gmu, bmu)
                bvar = torch.where(has_gdp.unsqueeze(1), gdp_var, bvar)
            pmu, pvar = bmu, bvar
        else:
            pmu, pvar = gmu, gdp_var
        has_real = (present.sum() - present.long()) > 0  # [K]
        has_virtual = (has_gdp.sum() - has_gdp.long()) > 0 if num_virtual > 0 else torch.zeros_like(present)
        cand = torch.nonzero(present & has_gdp & (has_real | has_virtual)).squeeze(1)
        apool = _anchor_pool(vpool, anchor_fallback)
        anchors, ok = _anchors_from_pool(apool, cand, num_anchors, generator)
        classes, anchors = cand[ok], anchors[ok]
        c = classes.numel()
        cp = negative_class_probs(pmu, pvar, classes, present, temperature)  # [C, K]
        neg, neg_cls = _negatives_from_pool(vpool, cp, num_negatives, generator, fill=0,  # 0: masked
                                            repeats=num_anchors)
        neg = neg.view(c, num_anchors, num_negatives)
        virt = virtual_negatives(gdp_mu, gdp_prec, c * num_virtual, virtual_radius, generator)  # [K, C*V, D]
        virt = virt.view(k, c, num_virtual, d).transpose(0, 1).contiguous().to(dt)  # [C, K, V, D]
        vmask = has_gdp.unsqueeze(0) & (torch.arange(k, device=dev) != classes.unsqueeze(1))
        if num_virtual == 0:
            vmask = torch.zeros_like(vmask)
        return PRCLSample(classes, anchors, neg, neg_cls.view(c, num_anchors, num_negatives), has_real[classes],
                          virt, vmask, cp)


def prcl_logits(mu: Tensor, var: Tensor, gdp_mu: Tensor, gdp_prec: Tensor, sample: PRCLSample, *,
                detach_negatives: bool = True, chunk_elems: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """MLS logits (not divided by T) of every anchor against its positive and negatives.

    Columns: 0 = the class's GDP ``(mu_g, 1 / prec_g)``; ``1..M`` = the sampled pixels
    ``(mu_j, var_j)``; then ``K * V`` virtual negatives (class-major), scored as points
    (variance 0, as in the public code). Gradient flows through the anchors; the GDP and the
    virtual negatives are buffers; pixel negatives are detached unless ``detach_negatives=False``.

    Returns:
        (logits [C, A, 1 + M + K*V], mask [C, 1 + M + K*V] bool: the columns that count).
    """
    c, a = sample.anchors.shape
    m = sample.negatives.shape[2]
    _, k, v, d = sample.virtual.shape
    n = mu.shape[0]
    dt = compute_dtype(mu)
    gdp_var, _ = _gdp_var(gdp_prec, dt)
    neg_mu, neg_var = (mu.detach(), var.detach()) if detach_negatives else (mu, var)
    bank_mu = torch.cat([neg_mu.to(dt), gdp_mu.detach().to(dt), sample.virtual.reshape(-1, d).to(dt)])
    bank_var = torch.cat([neg_var.to(dt), gdp_var, sample.virtual.new_zeros(c * k * v, d).to(dt)])
    # bank rows: [0, n) pixels | [n, n + k) GDPs | n + k + (ci * k + class) * v + draw: virtual negatives
    pos_col = (n + sample.classes).view(c, 1, 1).expand(c, a, 1)
    virt = n + k + torch.arange(c * k * v, device=mu.device).view(c, 1, k * v)
    virt_col = virt.expand(c, a, k * v)
    index = torch.cat([pos_col, sample.negatives, virt_col], 2).reshape(c * a, -1)
    flat = sample.anchors.reshape(-1)
    logits = mutual_likelihood_score_indexed(mu[flat], var[flat], bank_mu, bank_var, index, chunk_elems=chunk_elems)
    mask = torch.cat([torch.ones_like(sample.has_real).unsqueeze(1), sample.has_real.unsqueeze(1).expand(c, m),
                      sample.virtual_mask.repeat_interleave(v, dim=1)], 1)
    return logits.view(c, a, -1), mask


def prcl_loss(mu: Tensor, var: Tensor, labels: Tensor, probs: Tensor, gdp_mu: Tensor, gdp_prec: Tensor, *,
              num_anchors: int = 256, num_negatives: int = 512, temperature: float = 100.0,
              weak_threshold: float = 0.8, num_virtual: int = 1, virtual_radius: float = 1.0,
              negative_protos: str = "global", anchor_fallback: bool = False, detach_negatives: bool = True,
              batch_protos: Optional[BatchPrototypes] = None, generator: Optional[torch.Generator] = None,
              ignore_index: int = 255, chunk_elems: Optional[int] = None) -> tuple[Tensor, dict]:
    """PRCL contrastive loss: per class c taking part, ``num_anchors`` hard anchors; positive =
    the GDP of c; ``num_negatives`` pixel negatives per anchor whose classes follow
    ``softmax_{c' != c present}(MLS(proto_c, proto_c') / T)``; ``num_virtual`` virtual negatives
    per other class with a GDP; ``CE(MLS / T, target 0)`` averaged over anchors, then classes.

    Args:
        mu, var: [N, D] pixel means (raw; normalised inside the MLS) and variances in (0, 1).
        labels: [N] int64 (ground truth / confident pseudo-labels; ``ignore_index`` elsewhere).
        probs: [N] predicted probability of each pixel's label (no gradient).
        gdp_mu, gdp_prec: [K, D] GDP buffers, normally already updated with this batch
            (:func:`gdp_update`, the public code's order); ``prec = 0`` = no GDP yet.
        temperature: T of both softmaxes. Default 100, the value of every released config and
            of the public README (their ``Prcl_Loss`` constructor default, 0.5, is never used);
            with precision-weighted prototypes ``MLS / 0.5`` makes the class draw one-hot.
        weak_threshold: anchors are pixels with ``probs <`` it (the public config's
            ``strong_threshold: 0.8``).
        negative_protos: prototypes of the negative-class distribution: ``"global"`` (the GDP;
            a present class without one uses its batch prototype) or ``"batch"``.
        anchor_fallback: draw anchors from all valid pixels of a class with no hard pixel
            (default False = skip the class, as the public code does).
        detach_negatives: pixel negatives carry no gradient (the public code samples them
            under no_grad).
        batch_protos: this batch's :func:`distribution_prototypes` if already computed.
        generator: on ``mu.device``; all sampling is determined by it.
        chunk_elems: MLS working-set size (see :func:`mutual_likelihood_score`).

    Returns:
        (loss, diagnostics): loss is a scalar, ``0 * (sum mu + sum var)`` when no class takes part;
        diagnostics holds ``sample`` (:class:`PRCLSample`), ``num_classes``, ``pos_mls``,
        ``neg_mls``, ``virtual_mls`` (means, detached; NaN when there is no such column) and
        ``hard_frac`` (share of valid pixels below ``weak_threshold``).
    """
    sample = prcl_sample(mu, var, labels, probs, gdp_mu, gdp_prec, num_anchors=num_anchors,
                         num_negatives=num_negatives, temperature=temperature, weak_threshold=weak_threshold,
                         num_virtual=num_virtual, virtual_radius=virtual_radius, negative_protos=negative_protos,
                         anchor_fallback=anchor_fallback, batch_protos=batch_protos, generator=generator,
                         ignore_index=ignore_index)
    with torch.no_grad():
        valid = labels != ignore_index
        hard_frac = ((probs < weak_threshold) & valid).sum() / valid.sum().clamp_min(1)
    diag = {"sample": sample, "num_classes": sample.classes.numel(), "hard_frac": hard_frac}
    zero = (mu.sum() + var.sum()) * 0.0
    if sample.classes.numel() == 0:
        nan = zero.detach() * float("nan")
        diag.update(pos_mls=nan, neg_mls=nan, virtual_mls=nan)
        return zero, diag
    logits, mask = prcl_logits(mu, var, gdp_mu, gdp_prec, sample, detach_negatives=detach_negatives,
                               chunk_elems=chunk_elems)
    scaled = logits.div(temperature).masked_fill(~mask.unsqueeze(1), float("-inf"))
    ce = torch.logsumexp(scaled, 2) - scaled[:, :, 0]  # [C, A]
    loss = ce.mean(1).mean() + zero
    with torch.no_grad():
        m = num_negatives
        real = logits[:, :, 1:m + 1][sample.has_real]
        virt = logits[:, :, m + 1:].masked_select(mask[:, m + 1:].unsqueeze(1).expand(-1, logits.shape[1], -1))
        diag.update(pos_mls=logits[:, :, 0].mean(), neg_mls=real.mean(), virtual_mls=virt.mean())
    return loss, diag
