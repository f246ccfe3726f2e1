"""HDMNet: tiled matching against the dense formula (float64), the model's contracts, the method."""

import pytest
import torch
import torch.nn.functional as F

from segproto import ops
from segproto.config import config_from_dict
from segproto.methods import METHODS
from segproto.methods.hdmnet import HDMNetMethod
from segproto.models.hdmnet import (FrozenFeatureCache, HDMNet, dense_query_softmax_attention,
                                     query_softmax_attention)

F64 = torch.float64


# --- matching: tiled == dense ----------------------------------------------------------------------

def dense_oracle(q, k, v, mask, temperature):
    """methods.md as written: S = masked cosine / T, softmax over the QUERY axis, zeroed at support
    background, times V; w = masked mean of the raw scores, mean over heads."""
    b, h, lq, d = q.shape
    out, w = [], []
    for i in range(b):
        s = ops.masked_cosine_correlation(q[i].transpose(1, 2), k[i].transpose(1, 2),
                                          mask[i].expand(h, -1)) / temperature  # [h, Lq, Ls]
        att = torch.softmax(s, dim=1) * (mask[i] == 1)  # softmax over queries
        out.append(att @ v[i])
        w.append(((s * mask[i]).sum(-1) / (mask[i].sum() + 1e-9)).mean(0))
    return torch.stack(out), torch.stack(w)


def rand_qkv(b=2, h=3, lq=7, ls=11, d=5, dv=4, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(b, h, lq, d, generator=g, dtype=dtype), torch.randn(b, h, ls, d, generator=g, dtype=dtype)
    v = torch.randn(b, h, ls, dv, generator=g, dtype=dtype)
    mask = (torch.rand(b, ls, generator=g) > 0.4).to(dtype)
    mask[:, 0] = 1
    return [t.requires_grad_() for t in (q, k, v)], mask


def outputs_and_grads(fn, q, k, v, seed=1):
    out, w = fn()
    g = torch.Generator().manual_seed(seed)
    go, gw = torch.randn(out.shape, generator=g, dtype=out.dtype), torch.randn(w.shape, generator=g, dtype=w.dtype)
    return [out, w, *torch.autograd.grad((out * go).sum() + (w * gw).sum(), (q, k, v))]


@pytest.mark.parametrize("tile", [1, 2, 3, 7, 100])
def test_tiled_matching_equals_dense_outputs_and_grads(tile):
    (q, k, v), mask = rand_qkv()
    want = outputs_and_grads(lambda: dense_oracle(q, k, v, mask, 0.1), q, k, v)
    got = outputs_and_grads(lambda: query_softmax_attention(q, k, v, mask, 0.1, tile), q, k, v)
    for name, a, b in zip(["out", "w", "dq", "dk", "dv"], got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)
    ref = outputs_and_grads(lambda: dense_query_softmax_attention(q, k, v, mask, 0.1), q, k, v)
    for a, b in zip(ref, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_tiled_matching_gradcheck_and_empty_mask():
    (q, k, v), mask = rand_qkv(b=1, h=2, lq=5, ls=4, d=3, dv=2)
    assert torch.autograd.gradcheck(lambda q, k, v: query_softmax_attention(q, k, v, mask, 0.5, 2), (q, k, v))
    out, w = query_softmax_attention(q, k, v, torch.zeros_like(mask), 0.1, 2)
    assert not out.abs().any() and not w.abs().any()


def test_tiled_matching_saves_no_score_matrix():
    """The autograd graph of the tiled matching keeps nothing of size Lq x Ls (the OOM of 5-shot COCO)."""
    (q, k, v), mask = rand_qkv(b=1, h=2, lq=64, ls=80, d=4, dv=4)
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        out, w = query_softmax_attention(q, k, v, mask, 0.1, 8)
    assert max(sizes) < 64 * 80
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        dense_query_softmax_attention(q, k, v, mask, 0.1)
    assert max(sizes) >= 2 * 64 * 80  # the dense form does keep [B, heads, Lq, Ls]


# --- the model ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HDMNet("resnet18")


def episode(b=2, k=1, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, s = torch.randn(b, 3, size, size, generator=g), torch.randn(b, k, 3, size, size, generator=g)
    sm = torch.zeros(b, k, size, size, dtype=torch.long)
    sm[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    sm[..., :2, :] = 255
    gt = torch.randint(0, 2, (b, size, size), generator=g)
    return q, s, sm, gt


@pytest.mark.parametrize("shots,size,sizes", [(1, 32, [(1, 1), (2, 2), (4, 4)]), (5, 32, [(1, 1), (2, 2), (4, 4)]),
                                              (1, 64, [(2, 2), (4, 4), (8, 8)])])
def test_forward_backward_shapes_and_frozen_backbone(model, shots, size, sizes):
    q, s, sm, gt = episode(k=shots, size=size)
    model.train().zero_grad()
    bn = model.backbone.bn1.running_mean.clone()
    out = model(q, s, sm)
    assert out["logits"].shape == (2, 2, size, size)
    assert [tuple(m.shape[1:]) for m in out["maps"]] == sizes  # coarse to fine; tiny maps reduce to 1x1
    (F.cross_entropy(out["logits"], gt) + sum(m.square().mean() for m in out["maps"])).backward()
    assert not model.backbone.training and all(not m.training for m in model.backbone.modules())
    assert torch.equal(model.backbone.bn1.running_mean, bn)
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert not p.requires_grad and p.grad is None, name
        elif size == 32 and name.startswith("stages.2.") and name.endswith("attn.q.weight"):
            # the coarsest stage of a 32-px input attends over a single key: the softmax is the
            # constant 1, so the query projection's gradient is 0 exactly (rounding may leave ~1e-9)
            assert p.grad is not None and p.grad.abs().max() < 1e-6, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_support_pixels_outside_mask_do_not_matter(model):
    q, s, sm, _ = episode(k=2)
    s2 = torch.where((sm == 1)[:, :, None], s, torch.randn_like(s) * 5)
    model.eval()
    with torch.no_grad():
        a, b = model(q, s, sm), model(q, s2, sm)
    torch.testing.assert_close(a["logits"], b["logits"], rtol=0, atol=0)
    assert not torch.equal(a["logits"], model(q, s + 1, sm)["logits"])  # foreground pixels do


def test_seeded_training_forwards_are_identical(model):
    q, s, sm, _ = episode(k=2)
    model.train()
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(model(q, s, sm))
    assert torch.equal(outs[0]["logits"], outs[1]["logits"])
    assert all(torch.equal(x, y) for x, y in zip(outs[0]["maps"], outs[1]["maps"]))


def test_model_tile_size_does_not_change_outputs():
    torch.manual_seed(0)
    m = HDMNet("resnet18", dim=16, mid_dim=32, heads=(1, 2, 2), match_tile=1).double().eval()
    q, s, sm, _ = episode(k=2, size=64)
    with torch.no_grad():
        a = m(q.double(), s.double(), sm)
        for layer in m.match:
            layer.tile = 10**6
        b = m(q.double(), s.double(), sm)
    torch.testing.assert_close(a["logits"], b["logits"], rtol=1e-10, atol=1e-10)


def test_bad_shapes_name_the_argument(model):
    q, s, sm, _ = episode()
    with pytest.raises(ValueError, match="support_mask"):
        model(q, s, sm[:, :, :-1])
    with pytest.raises(ValueError, match="support_img"):
        model(q, s[0], sm)


# --- the method -----------------------------------------------------------------------------------

def method_cfg(**fewshot):
    return config_from_dict({"method": {"name": "hdmnet"}, "model": {"backbone": "resnet18"},
                             "fewshot": {"dim": 16, **fewshot}})


def test_method_losses_eval_and_deployable():
    torch.manual_seed(0)
    method = METHODS["hdmnet"](method_cfg(distill_weight=0.5), 2, None)
    assert isinstance(method, HDMNetMethod) and method.episodic
    q, s, sm, gt = episode(k=2)
    gt[:, :3] = 255
    out = method.train()(q, gt, 1, support_img=s, support_mask=sm)
    assert not method.model.backbone.training  # method.train() keeps the frozen backbone in eval
    assert {"loss_ce", "loss_distill", "distill", "pred_fg"} <= set(out)
    assert out["loss_distill"].item() == pytest.approx(0.5 * out["distill"].item())
    sum(v for key, v in out.items() if key.startswith("loss")).backward()
    assert all(p.grad is not None for p in method.trainable_parameters())
    assert method.eval()(q, support_img=s, support_mask=sm).shape == (2, 2, 32, 32)
    assert method.deployable() is method.model
    method.distill_weight = 0.0
    assert "loss_distill" not in method.train()(q, gt, support_img=s, support_mask=sm)
    with pytest.raises(ValueError, match="support_img"):
        method(q, gt)


def test_backbone_checkpoint_loading(tmp_path):
    torch.manual_seed(1)
    src = HDMNet("resnet18", dim=16).backbone.state_dict()
    good, bad = tmp_path / "ce.pth", tmp_path / "other.pth"
    torch.save({"model": {f"segmentor.backbone.{k}": v for k, v in src.items()} | {"segmentor.head.w": torch.ones(1)}},
               good)
    method = HDMNetMethod.from_config(method_cfg(backbone_checkpoint=str(good)), 2)
    for key, val in method.model.backbone.state_dict().items():
        assert torch.equal(val, src[key]), key
    assert not any(p.requires_grad for p in method.model.backbone.parameters())
    torch.save({"model": {"proj.weight": torch.ones(1)}}, bad)
    with pytest.raises(ValueError, match="segmentor.backbone"):
        HDMNetMethod.from_config(method_cfg(backbone_checkpoint=str(bad)), 2)
    torch.save({"model": {f"segmentor.backbone.{k}": v for k, v in list(src.items())[:-3]}}, bad)
    with pytest.raises(ValueError, match="missing"):
        HDMNetMethod.from_config(method_cfg(backbone_checkpoint=str(bad)), 2)


# --- the evaluation feature cache -----------------------------------------------------------------

def per_sample_fn(calls):
    """Two outputs per sample, each a function of that sample alone; records every batch size."""
    def fn(x):
        calls.append(x.shape[0])
        return [x * 2 + 1, x.flatten(1).sum(1, keepdim=True)]
    return fn


def test_feature_cache_computes_each_distinct_sample_once():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(3, 4, 4, generator=g) for _ in range(3))
    calls, cache = [], FrozenFeatureCache(max_mb=1)
    fn = per_sample_fn(calls)
    for x in (torch.stack([a, b, a]), torch.stack([b, c]), torch.stack([c, a, b, c])):
        got, want = cache(fn, x), fn(x)
        calls.pop()  # the reference call above
        assert all(torch.equal(u, v) for u, v in zip(got, want))
    assert calls == [2, 1]  # {a, b} in the first batch, c in the second, nothing after
    assert (len(cache), cache.misses, cache.hits) == (3, 3, 6)
    assert cache.bytes == 3 * (3 * 4 * 4 + 1) * 4
    assert cache(fn, torch.stack([a.double()]))[0].dtype == torch.float64 and calls[-1] == 1  # dtype is in the key
    assert cache(fn, a.reshape(1, 3, 16, 1))[0].shape == (1, 3, 16, 1) and calls[-1] == 1  # so is the shape


def test_feature_cache_over_its_bound_stores_nothing_and_stays_correct():
    x = torch.randn(4, 3, 8, 8)
    calls, cache = [], FrozenFeatureCache(max_mb=100 / 2 ** 20)  # 100 bytes: less than one sample's features
    fn = per_sample_fn(calls)
    for _ in range(2):
        assert all(torch.equal(u, v) for u, v in zip(cache(fn, x), [x * 2 + 1, x.flatten(1).sum(1, keepdim=True)]))
    assert calls == [4, 4] and len(cache) == 0 and cache.bytes == 0


def counting_backbone(model):
    seen = []
    forward = model.backbone.forward

    def wrapped(x):
        seen.append(x.shape[0])
        return forward(x)
    model.backbone.forward = wrapped
    return seen


def test_cached_model_outputs_equal_uncached_with_fewer_backbone_images():
    torch.manual_seed(0)
    m = HDMNet("resnet18", dim=16, mid_dim=32, heads=(1, 2, 2)).double().eval()
    seen = counting_backbone(m)
    q, s, sm, _ = episode(b=2, k=2, size=32)
    q, s = q.double(), s.double()
    episodes = [(q, s, sm), (q.flip(0), s.flip(0), sm.flip(0)), (q, s, sm)]  # the same images come back
    with torch.no_grad():
        plain = [m(*e)["logits"] for e in episodes]
        n_plain = sum(seen)
        seen.clear()
        with m.cached_backbone() as cache:
            with m.cached_backbone() as inner:  # nested blocks share the outer cache
                assert inner is cache
            cached = [m(*e)["logits"] for e in episodes]
            assert len(cache) == 2 + 4  # two queries, four masked supports
        assert m._feature_cache is None  # dropped with the block
    for a, b in zip(plain, cached):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert n_plain == 3 * (2 + 4) and sum(seen) == 2 + 4


def test_cache_is_off_in_training_and_at_zero_size():
    torch.manual_seed(0)
    m = HDMNet("resnet18", dim=16, feature_cache_mb=0)
    with m.cached_backbone() as cache:
        assert cache is None
    m = HDMNet("resnet18", dim=16)
    seen = counting_backbone(m)
    q, s, sm, _ = episode(k=1)
    with m.cached_backbone() as cache:
        m.train()
        m(q, s, sm)
        m(q, s, sm)
    assert sum(seen) == 2 * (2 + 2) and len(cache) == 0 and cache.hits == 0
