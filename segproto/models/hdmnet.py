"""HDMNet: few-shot segmentation by hierarchical dense correlation (methods.md section 4).

Pipeline (shapes for query ``[B, 3, H, W]``, K supports, feature size ``h x w = H/8 x W/8``)::

    frozen ResNet (output stride 8, eval mode, no_grad); supports multiplied by their binary mask
    mid   = 1x1 conv(concat(layer3, layer2)) -> 256 (separate convs for query and support, PFENet)
    prior = masked_cosine_prior on layer4 and on layer3, mean over shots, per-image min-max
            normalised (PFENet), x prior_scale                                      # [B, 2, h, w]
    proto = masked average pooling of the support mid feature                    # [B*K, 256]
    query tokens   = 1x1 conv(concat(mid, mean-over-shots proto, prior)) -> dim
    support tokens = 1x1 conv(concat(mid, own proto)) -> dim
    hierarchy: 3 self-attention-only stages (patch-embed strides [1, 2, 2], 2 efficient
               attention layers with spatial reduction [4, 2, 1], heads [2, 4, 8]); query and
               support pass separately (shared weights, never mixed)
    matching, coarse to fine: cross attention with S(q, s) = cos(q, k_s) / temperature,
               softmax over the QUERY axis, zeroed at support background, times V; the K shots
               are concatenated along the support axis; correlation map
               w(q) = sum_s S(q, s) m(s) / (sum_s m(s) + 1e-9), mean over heads
    decoder: coarse to fine, each stage fused with its match output and the prior -> 2 logits

Open choices (public HDMNet code unless said): 2 matching heads; MixFFN ratio 4, dropout 0.1;
Dropout2d(0.5) after the mid convs; layer3 as the second prior level (public: its PSPNet head).
Deviations from the public code (none from methods.md): bilinear resizes use align_corners=False
(public: True); binary masks are resized with "nearest-exact" (the pixel nearest each cell's
centre; public "nearest" takes the top-left one, so a 1x1 stage saw the image corner); the
spatial-reduction conv zero-pads the map up to a multiple of its ratio, so maps smaller than the
ratio reduce to 1x1 instead of failing (identical whenever the size is a multiple, 60 -> 15);
decoder convs are all conv-BN-ReLU (public: no inner ReLUs); no base learner, Gram ensemble or
K-shot re-weighting (BAM extras, not in methods.md).
"""


from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segproto import ops

from .backbones import Backbone, build_backbone
from .hdmnet_attention import correlation_map, dense_query_softmax_attention, query_softmax_attention
from .hdmnet_cache import FrozenFeatureCache
from .hdmnet_layers import HierarchyStage, MatchLayer, _to_map, _to_tokens
from .heads import ConvBNReLU

__all__ = ["HDMNet", "FrozenFeatureCache", "query_softmax_attention", "dense_query_softmax_attention",
           "correlation_map"]


def _resize(x: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest-exact":
        return F.interpolate(x, size=tuple(size), mode="nearest-exact")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)


def _minmax(p: Tensor) -> Tensor:
    """Per-image min-max normalisation of ``[B, L]`` priors to [0, 1] (PFENet)."""
    lo, hi = p.amin(1, keepdim=True), p.amax(1, keepdim=True)
    return (p - lo) / (hi - lo + 1e-7)


def _masked_average(feat: Tensor, mask: Tensor) -> Tensor:
    """Masked average pooling: ``feat [N, C, h, w]``, ``mask [N, 1, h, w]`` -> ``[N, C]``."""
    return (feat * mask).sum((2, 3)) / (mask.sum((2, 3)) + 5e-4)


class HDMNet(nn.Module):
    """HDMNet few-shot segmenter (see the module docstring).

    Args:
        backbone: ``build_backbone`` name; a ResNet (or any backbone whose last three features
            share stride 8 at output stride 8).
        pretrained, strict: Passed to ``build_backbone`` (ImageNet weights); a stage-one
            checkpoint is loaded afterwards by :meth:`load_backbone_state`.
        dim: Channels of the hierarchy. mid_dim: Channels of the mid features (256).
        heads, sr_ratios, strides: Per hierarchy stage (fine to coarse).
        match_heads: Heads of the matching attention.
        temperature: Matching score temperature. prior_scale: Priors are multiplied by this.
        match_tile: Query positions per matching tile (bounds the matching's peak memory).
        feature_cache_mb: Bound of the evaluation feature cache (:meth:`cached_backbone`); 0: off.
    """

    def __init__(self, backbone: str = "resnet50", pretrained=None, strict: bool = True, dim: int = 64,
                 mid_dim: int = 256, heads: Sequence[int] = (2, 4, 8), sr_ratios: Sequence[int] = (4, 2, 1),
                 strides: Sequence[int] = (1, 2, 2), match_heads: int = 2, temperature: float = 0.1,
                 prior_scale: float = 10.0, match_tile: int = 4096, mlp_ratio: int = 4, dropout: float = 0.1,
                 mid_dropout: float = 0.5, feature_cache_mb: float = 1024.0, **backbone_kwargs) -> None:
        super().__init__()
        self.feature_cache_mb = feature_cache_mb
        self._feature_cache: Optional[FrozenFeatureCache] = None
        if not (len(heads) == len(sr_ratios) == len(strides)):
            raise ValueError(f"heads {heads}, sr_ratios {sr_ratios} and strides {strides} need one entry per stage")
        self.backbone: Backbone = build_backbone(backbone, 8, pretrained, strict, **backbone_kwargs)
        if len(self.backbone.strides) < 3 or list(self.backbone.strides[-3:]) != [8, 8, 8]:
            raise ValueError(f"backbone: HDMNet needs layer2/3/4 at stride 8; {backbone!r} gives strides "
                             f"{self.backbone.strides}")
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.prior_scale = prior_scale
        c2, c3 = self.backbone.channels[-3], self.backbone.channels[-2]
        mid = lambda: nn.Sequential(nn.Conv2d(c2 + c3, mid_dim, 1, bias=False), nn.ReLU(inplace=True),  # noqa: E731
                                    nn.Dropout2d(mid_dropout))
        self.down_query, self.down_supp = mid(), mid()
        self.query_merge = nn.Sequential(nn.Conv2d(2 * mid_dim + 2, dim, 1, bias=False), nn.ReLU(inplace=True))
        self.supp_merge = nn.Sequential(nn.Conv2d(2 * mid_dim, dim, 1, bias=False), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList(HierarchyStage(dim, h, r, s, mlp_ratio, dropout)
                                    for h, r, s in zip(heads, sr_ratios, strides))
        n = len(self.stages)
        self.match = nn.ModuleList(MatchLayer(dim, match_heads, temperature, match_tile, mlp_ratio, dropout)
                                   for _ in range(n))
        self.fuse = nn.ModuleList(ConvBNReLU(dim + 2, dim, 3) for _ in range(n))
        self.parse = nn.ModuleList(nn.Sequential(ConvBNReLU(dim, 4 * dim, 1), ConvBNReLU(4 * dim, 4 * dim, 3),
                                                 ConvBNReLU(4 * dim, dim, 1)) for _ in range(n))
        self.cls = nn.Sequential(ConvBNReLU(dim, 4 * dim, 1), ConvBNReLU(4 * dim, 4 * dim, 3), nn.Conv2d(4 * dim, 2, 1))

    def train(self, mode: bool = True) -> "HDMNet":
        """Sets training mode everywhere but in the frozen backbone (always eval: BN statistics fixed)."""
        super().train(mode)
        self.backbone.eval()
        return self

    @contextlib.contextmanager
    def cached_backbone(self) -> Iterator[Optional[FrozenFeatureCache]]:
        """Within the block, eval-mode forwards take the frozen backbone's features from a
        :class:`FrozenFeatureCache` (bounded by ``feature_cache_mb``; 0 turns it off). Nested blocks
        share the outermost cache; it is dropped when that block ends. Training-mode forwards
        never use it (their inputs are augmented anew at every step)."""
        if self._feature_cache is not None or self.feature_cache_mb <= 0:
            yield self._feature_cache
            return
        self._feature_cache = FrozenFeatureCache(self.feature_cache_mb)
        try:
            yield self._feature_cache
        finally:
            self._feature_cache = None

    def _frozen(self, x: Tensor) -> List[Tensor]:
        cache = self._feature_cache
        return self.backbone(x) if cache is None or self.training else cache(self.backbone, x)

    def load_backbone_state(self, state: dict, source: str = "state dict") -> None:
        """Loads backbone weights (keys relative to the backbone); raises naming missing/extra keys."""
        result = self.backbone.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"backbone weights from {source} do not fit the backbone: missing "
                             f"{result.missing_keys[:5]} ({len(result.missing_keys)}), unexpected "
                             f"{result.unexpected_keys[:5]} ({len(result.unexpected_keys)})")

    @torch.no_grad()
    def _priors(self, qf: List[Tensor], sf: List[Tensor], fg: Tensor, k: int) -> Tensor:
        """Prior masks ``[B, 2, h, w]`` (layer4, layer3) from frozen features; ``fg [B*K, 1, H, W]``."""
        priors = []
        for q, s in ((qf[-1], sf[-1]), (qf[-2], sf[-2])):
            b, c, h, w = q.shape
            m = _resize(fg, s.shape[-2:], "nearest-exact").view(b, k, -1)  # [B, K, Ls]
            s = s.view(b, k, c, -1)  # [B, K, C, Ls]
            p = torch.stack([ops.masked_cosine_prior(q.flatten(2), s[:, i], m[:, i]) for i in range(k)]).mean(0)
            priors.append(_minmax(p).view(b, 1, h, w))  # [B, 1, h, w]
        return torch.cat(priors, 1) * self.prior_scale

    def _check_inputs(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor) -> None:
        if query_img.dim() != 4 or query_img.shape[1] != 3:
            raise ValueError(f"query_img must be [B, 3, H, W], got {tuple(query_img.shape)}")
        b = query_img.shape[0]
        if support_img.dim() != 5 or support_img.shape[0] != b or support_img.shape[2] != 3:
            raise ValueError(f"support_img must be [B, K, 3, H, W] with B = {b}, got {tuple(support_img.shape)}")
        want = (*support_img.shape[:2], *support_img.shape[3:])
        if tuple(support_mask.shape) != want:
            raise ValueError(f"support_mask must be [B, K, H, W] = {want}, got {tuple(support_mask.shape)}")

    def encode(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor):
        """Frozen features, priors and merged tokens: (query ``[B, dim, h, w]``, support
        ``[B*K, dim, h, w]``, prior ``[B, 2, h, w]``, support foreground ``[B*K, 1, H, W]``)."""
        b, k = support_img.shape[:2]
        fg = (support_mask == 1).to(support_img.dtype).flatten(0, 1)[:, None]  # [B*K, 1, H, W]
        with torch.no_grad():
            qf = self._frozen(query_img)  # [layer1..layer4]
            sf = self._frozen(support_img.flatten(0, 1) * fg)  # masked supports, [B*K, C, h, w] each
        prior = self._priors(qf, sf, fg, k)  # [B, 2, h, w]
        q_mid = self.down_query(torch.cat([qf[-2], qf[-3]], 1))  # [B, 256, h, w]
        s_mid = self.down_supp(torch.cat([sf[-2], sf[-3]], 1))  # [B*K, 256, hs, ws]
        proto = _masked_average(s_mid, _resize(fg, s_mid.shape[-2:]))[:, :, None, None]  # [B*K, 256, 1, 1]
        q_proto = proto.view(b, k, -1, 1, 1).mean(1).expand(-1, -1, *q_mid.shape[-2:])
        q_x = self.query_merge(torch.cat([q_mid, q_proto, _resize(prior, q_mid.shape[-2:])], 1))
        s_x = self.supp_merge(torch.cat([s_mid, proto.expand(-1, -1, *s_mid.shape[-2:])], 1))
        return q_x, s_x, prior, fg

    def forward(self, query_img: Tensor, support_img: Tensor, support_mask: Tensor) -> dict:
        """Segments the query given K annotated supports.

        Args:
            query_img: ``[B, 3, H, W]``.
            support_img: ``[B, K, 3, Hs, Ws]``.
            support_mask: ``[B, K, Hs, Ws]``; 1 = foreground, other values (0, 255) background.

        Returns:
            ``{"logits": [B, 2, H, W], "maps": coarse-to-fine list of [B, h_s, w_s]}`` (the
            correlation maps, for :func:`segproto.losses.correlation_distillation_loss`).
        """
        self._check_inputs(query_img, support_img, support_mask)
        b, k = support_img.shape[:2]
        q_x, s_x, prior, fg = self.encode(query_img, support_img, support_mask)
        q_levels, s_levels = [], []
        for stage in self.stages:  # query and support apart, same weights
            q_x, s_x = stage(q_x), stage(s_x)
            q_levels.append(q_x)
            s_levels.append(s_x)
        outs, maps = None, []
        for i in reversed(range(len(self.stages))):  # coarse to fine
            q, s = q_levels[i], s_levels[i]  # [B, C, h, w], [B*K, C, hs, ws]
            hw = (q.shape[2], q.shape[3])
            s_tok = _to_tokens(s).reshape(b, -1, s.shape[1])  # [B, K*hs*ws, C]: shots concatenated
            m = _resize(fg, s.shape[-2:], "nearest-exact").reshape(b, -1)  # [B, K*hs*ws]
            x, w = self.match[i](_to_tokens(q), hw, s_tok, m)
            maps.append(w.view(b, *hw))
            x = self.fuse[i](torch.cat([_to_map(x, hw), _resize(prior, hw)], 1))  # [B, C, h, w]
            if outs is None:
                outs = self.parse[i](x)
            else:
                outs = _resize(outs, hw)
                outs = outs + self.parse[i](x + outs)
        logits = _resize(self.cls(outs), query_img.shape[-2:])  # [B, 2, H, W]
        return {"logits": logits, "maps": maps}
