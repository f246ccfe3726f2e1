"""The semi-supervised framework: an EMA teacher, weak/strong views and pseudo-label CE.

``MeanTeacherMethod`` trains on a labelled batch (``gt``) and an unlabelled batch (``unlabeled``,
the weak view from the loader): the teacher (an EMA of the student) labels the weak view; the
student sees the strong view (ClassMix across the batch, colour jitter, blur) and is trained with
CE on the labelled batch plus the pseudo-label CE, each unlabelled image weighted by its fraction
of pixels the teacher is at least ``semi.strong_threshold`` sure of. ``PRCLMethod`` adds the
probabilistic contrast on top. Details and choices: ``docs/methods/prcl.md``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segproto.config.sections.prcl import PRCLLossConfig
from segproto.config.sections.semi import SemiConfig
from segproto.data.pipeline.batch_aug import class_mix, photometric
from segproto.models import Segmentor, build_segmentor

from .base import SegMethod, labels_at, resize_logits
from .protocol import register_method
from .pico import step_seed

__all__ = ["EMATeacher", "MeanTeacherMethod", "PRCLMethod", "VarianceHead", "pseudo_label_loss"]


class EMATeacher(nn.Module):
    """A frozen copy of the student, updated after every optimizer step with
    ``decay = min(1 - 1 / (step + 1), ema_decay)``: parameters and floating buffers (BN statistics)
    are averaged, integer buffers copied. ``step`` is a buffer, so a resumed run continues exactly."""

    def __init__(self, student: nn.Module, ema_decay: float = 0.99) -> None:
        super().__init__()
        self.model = copy.deepcopy(student)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.ema_decay = ema_decay
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def decay(self) -> float:
        return min(1.0 - 1.0 / (int(self.step) + 1), self.ema_decay)

    @torch.no_grad()
    def update_(self, student: nn.Module) -> None:
        d = self.decay()
        for t, s in zip(self.model.state_dict().values(), student.state_dict().values()):
            if t.is_floating_point():
                t.mul_(d).add_(s.detach(), alpha=1.0 - d)
            else:
                t.copy_(s)
        self.step += 1

    def forward(self, img: Tensor) -> Tensor:
        """Logits of the teacher in eval mode (no dropout, running BN statistics)."""
        was = self.model.training
        self.model.eval()
        out = self.model(img)
        self.model.train(was)
        return out


def pseudo_label_loss(logits: Tensor, labels: Tensor, conf: Tensor, strong_threshold: float,
                      ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Pseudo-label CE on every pixel, each image weighted by the fraction of its pixels whose
    teacher confidence is ``>= strong_threshold``.

    Args:
        logits: ``[B, K, H, W]`` student logits at label size. labels: ``[B, H, W]`` pseudo-labels
            (``ignore_index`` skipped). conf: ``[B, H, W]`` teacher confidence of each pseudo-label.

    Returns:
        The loss and the mean weight (a diagnostic).
    """
    ce = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")  # [B, H, W]
    valid = labels != ignore_index
    weight = ((conf >= strong_threshold) & valid).flatten(1).float().mean(1)  # [B]
    n = valid.sum().clamp_min(1)
    return (weight.view(-1, 1, 1) * ce * valid).sum() / n, weight.mean()


@register_method("mean_teacher")
class MeanTeacherMethod(SegMethod):
    """Supervised CE + mean-teacher pseudo-label CE on strong views (no contrast).

    Args:
        segmentor: The student; the teacher is an EMA copy (the deployed model unless
            ``semi.eval_teacher`` is false).
        semi: The ``semi`` section. mean, std: image normalisation (for the photometric view).
        seed: Base seed of the per-step augmentation generator.
    """

    uses_unlabeled = True

    def __init__(self, segmentor: Segmentor, num_classes: int, semi: Optional[SemiConfig] = None,
                 mean: tuple = (123.675, 116.28, 103.53), std: tuple = (58.395, 57.12, 57.375),
                 ignore_index: int = 255, ce_weight: float = 1.0, class_weight: Optional[list[float]] = None,
                 seed: int = 0) -> None:
        super().__init__(segmentor, num_classes, ignore_index, ce_weight, class_weight)
        self.semi = semi if semi is not None else SemiConfig()
        self.teacher = EMATeacher(segmentor, self.semi.ema_decay)
        self.mean, self.std, self.seed = tuple(mean), tuple(std), seed
        self._generators: dict[str, torch.Generator] = {}

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, taxonomy=None) -> "MeanTeacherMethod":
        return cls(build_segmentor(cfg.model, num_classes), num_classes, cfg.semi, cfg.data.mean, cfg.data.std,
                   cfg.data.ignore_index, cfg.loss.ce.weight, cfg.loss.ce.class_weight, seed=cfg.seed)

    def generator(self, it: int, device: torch.device) -> torch.Generator:
        """This step's augmentation generator (a function of seed, iteration and rank only)."""
        from segproto.utils import dist

        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device)
        return self._generators[key].manual_seed(step_seed(self.seed + 7919, it, dist.rank()))

    # ------------------------------------------------------------------ views
    @torch.no_grad()
    def pseudo_labels(self, img_u: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher confidence and argmax on the weak view, at image size: ``[B, H, W]`` each."""
        probs = torch.softmax(self.teacher(img_u).float(), dim=1)
        return probs.max(dim=1)

    @torch.no_grad()
    def strong_view(self, img_u: Tensor, labels: Tensor, conf: Tensor, gen: torch.Generator) -> tuple[Tensor, ...]:
        """ClassMix (with ``semi.class_mix``) then colour jitter and blur; labels and confidences
        follow the mix (the photometric part changes no label)."""
        s = self.semi
        if s.class_mix:
            img_u, labels, (conf,), _ = class_mix(img_u, labels, [conf], gen, self.ignore_index)
        img_u = photometric(img_u, self.mean, self.std, gen, s.jitter, s.jitter_p, s.blur_p)
        return img_u, labels, conf

    # ------------------------------------------------------------------ the method
    def forward(self, img: Tensor, gt: Optional[Tensor] = None, it: int = 0,
                unlabeled: Optional[Tensor] = None) -> Any:
        if not self.training:
            return self.deployable()(img)
        if gt is None or unlabeled is None:
            raise ValueError(f"{type(self).__name__} trains on a labelled batch and an unlabelled one: "
                             "set data.unlabeled_split (e.g. train_unlabeled_1-8)")
        gen = self.generator(it, img.device)
        conf, pseudo = self.pseudo_labels(unlabeled)
        strong, pseudo, conf = self.strong_view(unlabeled, pseudo, conf, gen)
        out = self.segmentor(torch.cat([img, strong]))  # one pass: BN sees both batches
        b = img.shape[0]
        logits = resize_logits(out["logits"], gt.shape[-2:])
        losses = {"loss_ce": self.ce_weight * F.cross_entropy(
            logits[:b].float(), gt, weight=self.class_weight, ignore_index=self.ignore_index)}
        unsup, weight = pseudo_label_loss(logits[b:], pseudo, conf, self.semi.strong_threshold, self.ignore_index)
        losses["loss_unsup"] = self.semi.unsup_weight * unsup
        losses.update(unsup_weight=weight, confident=(conf >= self.semi.weak_threshold).float().mean())
        losses.update(self.semi_losses(out, gt, pseudo, conf, it, gen))
        return losses

    def semi_losses(self, out: dict, gt: Tensor, pseudo: Tensor, conf: Tensor, it: int,
                    gen: torch.Generator) -> dict[str, Tensor]:
        """Extra terms on the joint (labelled, strong unlabelled) pass; none for the mean teacher."""
        return {}

    def after_step(self, it: int) -> None:
        """Called by the trainer after each optimizer step: the EMA update of the teacher."""
        self.teacher.update_(self.segmentor)

    def deployable(self) -> Segmentor:
        """The teacher's segmentor (``semi.eval_teacher``, as the public code evaluates) or the student."""
        return self.teacher.model if self.semi.eval_teacher else self.segmentor

    @classmethod
    def deployable_key(cls, cfg: Any) -> str:
        return "teacher.model" if cfg.semi.eval_teacher else "segmentor"


class VarianceHead(nn.Module):
    """Per-pixel, per-dimension variance in ``(var_min, 1)``: 1x1 conv, BN, ReLU, 1x1 conv, sigmoid."""

    def __init__(self, in_channels: int, dim: int, var_min: float = 1e-4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, in_channels, 1, bias=False), nn.BatchNorm2d(in_channels),
                                 nn.ReLU(inplace=True), nn.Conv2d(in_channels, dim, 1))
        self.var_min = var_min

    def forward(self, feats: Tensor) -> Tensor:
        return self.var_min + (1.0 - self.var_min) * torch.sigmoid(self.net(feats))


@register_method("prcl")
class PRCLMethod(MeanTeacherMethod):
    """Mean teacher + PRCL: probabilistic pixel representations (mean and variance heads, training
    only) contrasted by mutual likelihood score against global distribution prototypes (GDP).

    The GDP buffers ``gdp_mu``/``gdp_prec`` ``[K, D]`` start empty (precision 0) and accumulate
    every step's precision-weighted class sums (all-reduced under DDP) before the loss, as the
    public code orders it.
    """

    def __init__(self, segmentor: Segmentor, num_classes: int, semi: Optional[SemiConfig] = None,
                 prcl: Optional[PRCLLossConfig] = None, total_iters: int = 1, **kwargs: Any) -> None:
        from segproto.models import ProjectionHead

        super().__init__(segmentor, num_classes, semi, **kwargs)
        self.prcl = p = prcl if prcl is not None else PRCLLossConfig()
        self.total_iters = total_iters
        self.proj = ProjectionHead(segmentor.feat_channels, p.proj_dim)
        self.var_head = VarianceHead(segmentor.feat_channels, p.proj_dim, p.var_min)
        self.register_buffer("gdp_mu", torch.zeros(num_classes, p.proj_dim))
        self.register_buffer("gdp_prec", torch.zeros(num_classes, p.proj_dim))
        # identical on every rank (all-reduced update): nothing to broadcast at each forward
        self._ddp_params_and_buffers_to_ignore = ["gdp_mu", "gdp_prec"]

    @classmethod
    def from_config(cls, cfg: Any, num_classes: int, taxonomy=None) -> "PRCLMethod":
        return cls(build_segmentor(cfg.model, num_classes), num_classes, cfg.semi, cfg.loss.prcl, cfg.train.iters,
                   mean=cfg.data.mean, std=cfg.data.std, ignore_index=cfg.data.ignore_index,
                   ce_weight=cfg.loss.ce.weight, class_weight=cfg.loss.ce.class_weight, seed=cfg.seed)

    def contrast_weight(self, it: int) -> float:
        """``weight * exp(-5 (it / T)^2)`` with ``ramp`` (the public ramp-down), else ``weight``."""
        w = self.prcl.weight
        return w * math.exp(-5.0 * (it / self.total_iters) ** 2) if self.prcl.ramp else w

    def contrast_targets(self, logits: Tensor, gt: Tensor, pseudo: Tensor, conf: Tensor,
                         size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Labels and predicted probabilities of those labels at the embedding size, ``[2B * h * w]``
        each: ground truth for the labelled half, pseudo-labels where the teacher is at least
        ``semi.weak_threshold`` sure for the unlabelled half (``ignore_index`` elsewhere)."""
        with torch.no_grad():
            pseudo = torch.where(conf >= self.semi.weak_threshold, pseudo, torch.full_like(pseudo, self.ignore_index))
            labels = labels_at(torch.cat([gt, pseudo]), size).flatten()
            probs = torch.softmax(resize_logits(logits.detach().float(), size), dim=1)  # [2B, K, h, w]
            probs = probs.permute(0, 2, 3, 1).reshape(-1, probs.shape[1])
            picked = probs.gather(1, labels.clamp(0, probs.shape[1] - 1).unsqueeze(1)).squeeze(1)
        return labels, picked

    def semi_losses(self, out: dict, gt: Tensor, pseudo: Tensor, conf: Tensor, it: int,
                    gen: torch.Generator) -> dict[str, Tensor]:
        from segproto.utils import dist
        from segproto.losses import distribution_prototypes, gdp_update, prcl_loss

        p = self.prcl
        mu = self.proj(out["feats"])  # [2B, D, h, w]
        var = self.var_head(out["feats"])
        size = tuple(mu.shape[-2:])
        labels, probs = self.contrast_targets(out["logits"], gt, pseudo, conf, size)
        mu = mu.permute(0, 2, 3, 1).reshape(-1, mu.shape[1]).float()
        var = var.permute(0, 2, 3, 1).reshape(-1, var.shape[1]).float()
        protos = distribution_prototypes(mu, var, labels, self.num_classes, self.ignore_index)
        with torch.no_grad():
            new_mu, new_prec = gdp_update(self.gdp_mu, self.gdp_prec, dist.all_reduce_sum(protos.prec_sum.detach()),
                                          dist.all_reduce_sum(protos.mu_prec_sum.detach()), p.gdp_decay)
            self.gdp_mu.copy_(new_mu)
            self.gdp_prec.copy_(new_prec)
        w = self.contrast_weight(it)
        if w > 0:
            loss, diag = prcl_loss(mu, var, labels, probs, self.gdp_mu.clone(), self.gdp_prec.clone(),
                                   num_anchors=p.num_anchors, num_negatives=p.num_negatives,
                                   temperature=p.temperature, weak_threshold=p.anchor_threshold,
                                   num_virtual=p.num_virtual, virtual_radius=p.virtual_radius,
                                   negative_protos=p.negative_protos, batch_protos=protos, generator=gen,
                                   ignore_index=self.ignore_index)
            extra = {"contrast_classes": torch.tensor(float(diag["num_classes"])), "hard_frac": diag["hard_frac"]}
        else:
            loss, extra = (mu.sum() + var.sum()) * 0.0, {}
        mean_var = var.detach().mean()
        return {"loss_contrast": w * loss, "contrast_weight": torch.tensor(w), "mean_var": mean_var,
                "gdp_set": (self.gdp_prec > 0).any(1).float().mean(), **extra}
