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
import hashlib
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segproto import ops

from .backbones import Backbone, build_backbone
from .heads import ConvBNReLU

__all__ = ["HDMNet", "FrozenFeatureCache", "query_softmax_attention", "dense_query_softmax_attention",
           "correlation_map"]

COS_EPS = 1e-7  # norm clamp of the cosine, as segproto.ops.masked_cosine_correlation


# --- matching: softmax over the query axis, tiled over query positions ---------------------------

def _tiles(n: int, tile: int):
    return [(i, min(i + tile, n)) for i in range(0, n, tile)]


class _QuerySoftmaxAttention(torch.autograd.Function):
    """``out = (softmax_q(qn kn^T * scale) * m) v`` over query tiles, never the full score matrix.

    Forward: pass 1 accumulates the per-column log-sum-exp over query tiles, pass 2 forms each
    tile's attention and output. Backward (recomputing tiles): with ``A = P m``,
    ``dv = sum_tiles A^T dout``; ``D(s) = sum_q P dP = v(s) . dv(s)``; then per tile
    ``dS = P (m (dout v^T) - D) * scale``, ``dq = dS kn``, ``dk += dS^T qn``. Tile work is done
    in place: at most two ``[B, h, tile, Ls]`` blocks are alive at any time.
    """

    @staticmethod
    def forward(ctx, qn: Tensor, kn: Tensor, v: Tensor, mask: Tensor, scale: float, tile: int) -> Tensor:
        m = mask.to(qn.dtype)[:, None, None, :]  # [B, 1, 1, Ls]
        qs, kt = qn * scale, kn.transpose(-1, -2)  # scores = qs @ kt
        lse = qn.new_full((*kn.shape[:2], 1, kn.shape[2]), float("-inf"))  # [B, h, 1, Ls]
        spans = _tiles(qn.shape[2], tile)
        for a, b in spans:
            s = torch.matmul(qs[:, :, a:b], kt)  # [B, h, t, Ls]
            mx = s.amax(2, keepdim=True)
            lse = torch.logaddexp(lse, s.sub_(mx).exp_().sum(2, keepdim=True).log_().add_(mx))
        out = qn.new_empty((*qn.shape[:3], v.shape[-1]))  # [B, h, Lq, dv]
        for a, b in spans:
            out[:, :, a:b] = torch.matmul(_probs(qs[:, :, a:b], kt, lse).mul_(m), v)
        ctx.save_for_backward(qs, kn, v, m, lse)
        ctx.scale, ctx.tile = scale, tile
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout: Tensor):
        qs, kn, v, m, lse = ctx.saved_tensors
        spans, kt = _tiles(qs.shape[2], ctx.tile), kn.transpose(-1, -2)
        dv = torch.zeros_like(v)  # [B, h, Ls, dv]
        for a, b in spans:
            att = _probs(qs[:, :, a:b], kt, lse).mul_(m)  # [B, h, t, Ls]
            dv += torch.matmul(att.transpose(-1, -2), dout[:, :, a:b])
        dsum = (v * dv).sum(-1)[:, :, None, :]  # [B, h, 1, Ls]
        dq, dk = torch.empty_like(qs), torch.zeros_like(kn)
        for a, b in spans:
            p = _probs(qs[:, :, a:b], kt, lse)
            ds = torch.matmul(dout[:, :, a:b], v.transpose(-1, -2)).mul_(m).sub_(dsum).mul_(p)  # dS / scale
            del p
            dq[:, :, a:b] = torch.matmul(ds, kn).mul_(ctx.scale)
            dk += torch.matmul(ds.transpose(-1, -2), qs[:, :, a:b])  # qs carries the scale
        return dq, dk, dv, None, None, None


def _probs(qs: Tensor, kt: Tensor, lse: Tensor) -> Tensor:
    """``exp(qs @ kt - lse)``: one tile of the query-axis softmax, computed in place."""
    return torch.matmul(qs, kt).sub_(lse).exp_()


def _check_attention_args(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be [B, heads, L, d]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if k.shape[:3] != v.shape[:3] or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q [B, h, Lq, d], k [B, h, Ls, d] and v [B, h, Ls, dv] disagree: "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if mask.shape != (k.shape[0], k.shape[2]):
        raise ValueError(f"mask must be [B, Ls] = {(k.shape[0], k.shape[2])}, got {tuple(mask.shape)}")


def correlation_map(qn: Tensor, kn: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """``w(q) = sum_s S(q, s) m(s) / (sum_s m(s) + 1e-9)``, mean over heads, without ``[Lq, Ls]``.

    S is linear in the key, so ``w(q) = qn . (sum_s m(s) kn(s)) / (temperature (sum_s m + 1e-9))``:
    the masked mean of the masked-cosine scores as one ``[B, h, d]`` reduction (exact for binary
    masks, where ``m^2 = m``). Args: unit ``qn [B, h, Lq, d]``, ``kn [B, h, Ls, d]``, ``mask [B, Ls]``.
    Returns ``[B, Lq]``.
    """
    m = mask.to(qn.dtype)  # [B, Ls]
    kbar = torch.einsum("bhsd,bs->bhd", kn, m) / (temperature * (m.sum(1) + 1e-9))[:, None, None]
    return torch.einsum("bhqd,bhd->bhq", qn, kbar).mean(1)


def query_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, temperature: float,
                            tile: int) -> Tuple[Tensor, Tensor]:
    """HDMNet matching attention, tiled over query positions (outputs and gradients exact).

    ``S = cos(q, k) / temperature``; ``out = (softmax over the query axis of S) * m(s) @ v``;
    peak extra memory ``O(B * heads * tile * Ls)`` in forward and backward (the autograd graph
    keeps no score matrix). Computed in at least float32, with autocast off.

    Args:
        q: ``[B, heads, Lq, d]``; k: ``[B, heads, Ls, d]``; v: ``[B, heads, Ls, dv]``.
        mask: ``[B, Ls]`` support foreground in {0, 1} (not differentiated).
        temperature: Score temperature (> 0). tile: Query positions per tile (>= 1).

    Returns:
        ``out [B, heads, Lq, dv]`` and the correlation map ``w [B, Lq]`` (see :func:`correlation_map`).
    """
    _check_attention_args(q, k, v, mask)
    if tile < 1:
        raise ValueError(f"tile must be >= 1 query positions, got {tile}")
    dt = torch.promote_types(q.dtype, torch.float32)  # scores / 0.1 and exp: never in half
    with torch.autocast(q.device.type, enabled=False):
        qn, kn = F.normalize(q.to(dt), dim=-1, eps=COS_EPS), F.normalize(k.to(dt), dim=-1, eps=COS_EPS)
        out = _QuerySoftmaxAttention.apply(qn, kn, v.to(dt), mask.detach(), 1.0 / temperature, int(tile))
        return out, correlation_map(qn, kn, mask.detach(), temperature)


def dense_query_softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor,
                                  temperature: float) -> Tuple[Tensor, Tensor]:
    """The untiled formula (full ``[B, heads, Lq, Ls]`` scores through autograd), for comparison."""
    _check_attention_args(q, k, v, mask)
    b, h, lq, d = q.shape
    m = mask.to(q.dtype)
    corr = ops.masked_cosine_correlation(q.reshape(b * h, lq, d).transpose(1, 2),
                                         k.reshape(b * h, -1, d).transpose(1, 2),
                                         m.repeat_interleave(h, 0)).view(b, h, lq, -1) / temperature
    att = torch.softmax(corr, dim=2) * m[:, None, None, :]  # softmax over the QUERY axis
    w = (corr * m[:, None, None, :]).sum(-1) / (m.sum(1)[:, None, None] + 1e-9)
    return torch.matmul(att, v), w.mean(1)


# --- transformer pieces ---------------------------------------------------------------------------

def _to_map(x: Tensor, hw: Tuple[int, int]) -> Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *hw)  # [B, L, C] -> [B, C, h, w]


def _to_tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C]


class MixFFN(nn.Module):
    """1x1 conv -> 3x3 depthwise conv -> GELU -> 1x1 conv (SegFormer), on ``[B, L, C]`` tokens."""

    def __init__(self, dim: int, ratio: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = dim * ratio
        self.net = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
                                 nn.GELU(), nn.Dropout(dropout), nn.Conv2d(hidden, dim, 1), nn.Dropout(dropout))

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        return _to_tokens(self.net(_to_map(x, hw)))


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a map reduced ``sr`` times per side.

    The reduction conv (kernel = stride = sr) sees the map zero-padded up to a multiple of sr, so
    an ``h x w`` map reduces to ``ceil(h/sr) x ceil(w/sr) >= 1x1`` (tiny maps never fail).
    """

    def __init__(self, dim: int, heads: int, sr: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.sr = heads, sr
        self.q, self.kv = nn.Linear(dim, dim, bias=False), nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.reduce, self.norm = nn.Conv2d(dim, dim, sr, stride=sr), nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        b, n, c = x.shape
        src = x
        if self.sr > 1:
            ph, pw = -hw[0] % self.sr, -hw[1] % self.sr
            src = self.norm(_to_tokens(self.reduce(F.pad(_to_map(x, hw), (0, pw, 0, ph)))))
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)  # [B, heads, L, d]
        k, v = self.kv(src).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, d]
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class EncoderLayer(nn.Module):
    """Pre-norm ``x + attn(LN(x))``, then ``x + MixFFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.ffn = EfficientSelfAttention(dim, heads, sr), MixFFN(dim, mlp_ratio, dropout)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.ffn(self.norm2(x), hw)


class HierarchyStage(nn.Module):
    """Overlapping patch embedding (stride 1 or 2) + LN, two self-attention layers, LN."""

    def __init__(self, dim: int, heads: int, sr: int, stride: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        kernel = 1 if stride == 1 else 3
        self.embed, self.embed_norm = nn.Conv2d(dim, dim, kernel, stride, kernel // 2), nn.LayerNorm(dim, eps=1e-6)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, sr, mlp_ratio, dropout) for _ in range(2))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)  # [N, C, h, w]
        hw = (x.shape[2], x.shape[3])
        t = self.embed_norm(_to_tokens(x))
        for layer in self.layers:
            t = layer(t, hw)
        return _to_map(self.norm(t), hw)


class MatchLayer(nn.Module):
    """Cross attention query -> support (see :func:`query_softmax_attention`) + MixFFN."""

    def __init__(self, dim: int, heads: int, temperature: float, tile: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by the matching heads {heads}")
        self.heads, self.temperature, self.tile = heads, temperature, tile
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj, self.ffn = nn.Linear(dim, dim), MixFFN(dim, mlp_ratio, dropout)

    def forward(self, xq: Tensor, hw: Tuple[int, int], xs: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """xq ``[B, Lq, C]``, xs ``[B, Ls, C]``, mask ``[B, Ls]`` -> (``[B, Lq, C]``, ``w [B, Lq]``)."""
        b, lq, c = xq.shape
        heads = lambda t: t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        nq, ns = self.norm1(xq), self.norm1(xs)
        out, w = query_softmax_attention(heads(self.q(nq)), heads(self.k(ns)), heads(self.v(ns)), mask,
                                         self.temperature, self.tile)
        x = xq + self.proj(out.transpose(1, 2).reshape(b, lq, c))
        return x + self.ffn(self.norm2(x), hw), w


# --- the model ------------------------------------------------------------------------------------

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


# --- evaluation: per-image memo of the frozen backbone --------------------------------------------

class FrozenFeatureCache:
    """Memo of a frozen module's per-sample outputs, keyed by the bytes of each input sample.

    Episodic evaluation draws its queries and masked supports from a few hundred images again and
    again (1000 episodes x seeds x (K + 1) images). The backbone is frozen and in eval mode, so a
    sample's features depend on its pixels alone: each distinct input is run once, the rest are
    looked up (a 16-byte BLAKE2b digest of the sample's bytes, with its dtype, shape and the
    autocast state, is the key). At most ``max_mb`` MiB of features are held; past that, new inputs
    are computed and not stored. Values equal the uncached ones up to the rounding of batched
    kernels (a sample is computed in the batch of the first call that misses it).

    Args:
        max_mb: Size bound of the stored features, MiB.
    """

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 2 ** 20)
        self.bytes = 0
        self.hits = self.misses = 0
        self._store: Dict[tuple, Tuple[Tensor, ...]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def _keys(self, x: Tensor) -> List[tuple]:
        dev = x.device.type
        amp = str(torch.get_autocast_dtype(dev)) if torch.is_autocast_enabled(dev) else None
        host = x.detach().to("cpu").contiguous()
        flat = host.reshape(host.shape[0], -1).view(torch.uint8).numpy()  # any dtype, as bytes
        return [(str(x.dtype), tuple(x.shape[1:]), amp, hashlib.blake2b(row.data, digest_size=16).digest())
                for row in flat]

    def __call__(self, fn: Callable[[Tensor], Sequence[Tensor]], x: Tensor) -> List[Tensor]:
        """``fn(x)`` (a list of ``[N, ...]`` tensors) with each sample of ``x`` computed at most once."""
        keys = self._keys(x)
        found: Dict[tuple, Tuple[Tensor, ...]] = {k: self._store[k] for k in keys if k in self._store}
        todo: Dict[tuple, int] = {}
        for i, k in enumerate(keys):
            if k not in found:
                todo.setdefault(k, i)
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            out = fn(x[list(todo.values())])
            for j, k in enumerate(todo):
                feats = tuple(o[j].clone() for o in out)  # own storage: the batch is not kept alive
                found[k] = feats
                size = sum(f.numel() * f.element_size() for f in feats)
                if self.bytes + size <= self.max_bytes:
                    self._store[k] = feats
                    self.bytes += size
        per_sample = [found[k] for k in keys]
        return [torch.stack([s[level] for s in per_sample]) for level in range(len(per_sample[0]))]


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
