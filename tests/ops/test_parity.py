"""Property tests: the compiled ops and the pure-PyTorch fallback accept and reject exactly the same
inputs (the same exception type) and give the same results, NaN included, over seeded random valid
and invalid calls of every op."""

import math
import random

import pytest
import torch

import segproto.ops as ops

pytestmark = pytest.mark.skipif(not ops.build_info()["extension"], reason="needs the compiled extension")

CASES = 40  # random calls per op (valid and invalid mixed)


def _run(monkeypatch, ext: bool, fn, args: dict):
    """Calls ``fn(**args)`` on fresh clones through the public op, with the extension on or off;
    returns ('ok', result, mutated args) or ('raise', exception type, message)."""
    clones = {k: v.clone() if torch.is_tensor(v) and v.is_contiguous() else v for k, v in args.items()}
    with monkeypatch.context() as m:
        m.setattr(ops, "_EXT", ext)
        try:
            out = fn(**clones)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            return "raise", type(exc), str(exc)
    return "ok", out, clones


def _same(a, b) -> None:
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
        else:
            assert torch.equal(a, b)
    else:
        assert a == b


def _compare(monkeypatch, fn, args, what):
    ext = _run(monkeypatch, True, fn, args)
    fallback = _run(monkeypatch, False, fn, args)
    assert ext[0] == fallback[0], f"{what}: compiled {ext[0]} ({ext[1:] if ext[0] == 'raise' else ''}) but " \
                                  f"fallback {fallback[0]} ({fallback[1:] if fallback[0] == 'raise' else ''})"
    if ext[0] == "raise":
        assert ext[1] is fallback[1], f"{what}: {ext[1].__name__} ({ext[2]}) vs {fallback[1].__name__} ({fallback[2]})"
        return "raise"
    _same(ext[1], fallback[1])
    for k, v in ext[2].items():  # in-place outputs
        if torch.is_tensor(v):
            _same(v, fallback[2][k])
    return "ok"


def _labels(rng, n, k, ignore=255, bad=False):
    lab = torch.randint(0, max(k, 1), (n,), generator=rng) if k > 0 else torch.full((n,), ignore)
    lab[torch.rand(n, generator=rng) < 0.2] = ignore
    if bad and n:
        lab[int(torch.randint(0, n, (1,), generator=rng))] = k + 3 if k else 7
    return lab


def _nan(t, rng):
    t = t.clone()
    if t.numel():
        t.view(-1)[int(torch.randint(0, t.numel(), (1,), generator=rng))] = float("nan")
    return t


def _mutations(seed: int, options: list[str]) -> str:
    return random.Random(seed).choice(options)


@pytest.mark.parametrize("seed", range(CASES))
def test_class_sums_parity(monkeypatch, seed):
    rng = torch.Generator().manual_seed(seed)
    n, d, k = int(torch.randint(0, 12, (1,), generator=rng)), int(torch.randint(1, 5, (1,), generator=rng)), 4
    case = _mutations(seed, ["valid", "valid", "normalize", "nan", "int_feats", "feats_3d", "int32_labels",
                             "labels_2d", "length", "neg_classes", "bad_label", "minus_one", "double"])
    feats, labels, kk = torch.randn(n, d, generator=rng), _labels(rng, n, k), k
    if case == "nan":
        feats = _nan(feats, rng)
    elif case == "int_feats":
        feats = feats.long()
    elif case == "feats_3d":
        feats = feats[None]
    elif case == "int32_labels":
        labels = labels.int()
    elif case == "labels_2d":
        labels = labels[None]
    elif case == "length":
        labels = torch.cat([labels, torch.zeros(1, dtype=torch.long)])
    elif case == "neg_classes":
        kk = -1
    elif case == "bad_label":
        labels = _labels(rng, max(n, 1), k, bad=True)
        feats = torch.randn(labels.shape[0], d, generator=rng)
    elif case == "minus_one" and n:
        labels[0] = -1
    elif case == "double":
        feats = feats.double()
    args = dict(feats=feats, labels=labels, num_classes=kk, ignore_index=255, normalize=case == "normalize")
    _compare(monkeypatch, ops.class_sums, args, f"class_sums[{case}]")


@pytest.mark.parametrize("seed", range(CASES))
def test_prototype_update_parity(monkeypatch, seed):
    rng = torch.Generator().manual_seed(seed)
    k, d = 5, 3
    case = _mutations(seed, ["valid", "valid", "nan_sums", "nan_momentum", "momentum_neg", "momentum_big", "inf",
                             "int_protos", "sums_shape", "counts_int32", "counts_len", "edges", "protos_1d"])
    protos = torch.nn.functional.normalize(torch.randn(k, d, generator=rng), dim=1)
    protos[0] = 0  # an unset prototype
    sums = torch.randn(k, d, generator=rng)
    counts = torch.randint(0, 3, (k,), generator=rng)
    momentum = float(torch.rand(1, generator=rng))
    if case == "nan_sums":
        sums = _nan(sums, rng)
        counts = counts + 1
    elif case == "nan_momentum":
        momentum = math.nan
    elif case == "momentum_neg":
        momentum = -0.1
    elif case == "momentum_big":
        momentum = 1.5
    elif case == "inf":
        momentum = math.inf
    elif case == "int_protos":
        protos = protos.long()
    elif case == "sums_shape":
        sums = sums[:, :2]
    elif case == "counts_int32":
        counts = counts.int()
    elif case == "counts_len":
        counts = counts[:3]
    elif case == "edges":
        momentum = float(seed % 2)
    elif case == "protos_1d":
        protos = protos[0]
    args = dict(protos=protos, sums=sums, counts=counts, momentum=momentum)
    _compare(monkeypatch, ops.prototype_update_, args, f"prototype_update_[{case}]")


@pytest.mark.parametrize("seed", range(CASES))
def test_memory_bank_push_parity(monkeypatch, seed):
    rng = torch.Generator().manual_seed(seed)
    k, m, d = 3, 4, 2
    n = int(torch.randint(0, 10, (1,), generator=rng))
    case = _mutations(seed, ["valid", "valid", "nan", "ptr_neg", "ptr_big", "ptr_int32", "bank_2d", "bank_empty",
                             "noncontig", "int_feats", "feats_dim", "labels_int32", "bad_label", "count_len"])
    bank = torch.randn(k, m, d, generator=rng)
    ptr = torch.randint(0, m, (k,), generator=rng)
    count = torch.randint(0, m + 1, (k,), generator=rng)
    feats, labels = torch.randn(n, d, generator=rng), _labels(rng, n, k)
    if case == "nan":
        feats = _nan(feats, rng)
    elif case == "ptr_neg":
        ptr[0] = -1
    elif case == "ptr_big":
        ptr[-1] = m
    elif case == "ptr_int32":
        ptr = ptr.int()
    elif case == "bank_2d":
        bank = bank[0]
    elif case == "bank_empty":
        bank = torch.zeros(k, 0, d)
    elif case == "noncontig":
        bank = torch.randn(k, d, m, generator=rng).transpose(1, 2)
    elif case == "int_feats":
        feats = feats.long()
    elif case == "feats_dim":
        feats = torch.randn(n, d + 1, generator=rng)
    elif case == "labels_int32":
        labels = labels.int()
    elif case == "bad_label":
        labels = _labels(rng, max(n, 1), k, bad=True)
        feats = torch.randn(labels.shape[0], d, generator=rng)
    elif case == "count_len":
        count = count[:2]
    args = dict(bank=bank, ptr=ptr, count=count, feats=feats, labels=labels, ignore_index=255)
    _compare(monkeypatch, ops.memory_bank_push_, args, f"memory_bank_push_[{case}]")


@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("seed", range(CASES))
def test_masked_cosine_parity(monkeypatch, seed, prior):
    rng = torch.Generator().manual_seed(seed)
    b, c, lq, ls = 2, 3, int(torch.randint(1, 5, (1,), generator=rng)), int(torch.randint(0, 5, (1,), generator=rng))
    case = _mutations(seed, ["valid", "valid", "nan", "mask_3d", "int_query", "dtype_mix", "batch", "mask_shape",
                             "eps_zero", "eps_nan", "zero_vectors", "double", "int_mask"])
    q, s = torch.randn(b, c, lq, generator=rng), torch.randn(b, c, ls, generator=rng)
    mask, eps = (torch.rand(b, ls, generator=rng) > 0.3).float(), 1e-7
    if case == "nan":
        q = _nan(q, rng)
    elif case == "mask_3d":
        mask = mask[:, None]
    elif case == "int_query":
        q = q.long()
    elif case == "dtype_mix":
        s = s.double()
    elif case == "batch":
        s = torch.randn(b + 1, c, ls, generator=rng)
    elif case == "mask_shape":
        mask = torch.ones(b, ls + 1)
    elif case == "eps_zero":
        eps = 0.0
    elif case == "eps_nan":
        eps = math.nan
    elif case == "zero_vectors":
        q[:, :, 0] = 0
    elif case == "double":
        q, s, mask = q.double(), s.double(), mask.double()
    elif case == "int_mask":
        mask = mask.long()
    fn = ops.masked_cosine_prior if prior else ops.masked_cosine_correlation
    _compare(monkeypatch, fn, dict(query=q, support=s, mask=mask, eps=eps), f"{fn.__name__}[{case}]")


@pytest.mark.parametrize("seed", range(CASES))
def test_select_per_class_parity(monkeypatch, seed):
    rng = torch.Generator().manual_seed(seed)
    b, n, k, v = 2, int(torch.randint(0, 12, (1,), generator=rng)), 3, int(torch.randint(0, 4, (1,), generator=rng))
    case = _mutations(seed, ["valid", "valid", "int32_labels", "int_keys", "shape", "neg_v", "neg_k", "bad_label",
                             "double_keys", "labels_1d"])
    labels = torch.stack([_labels(rng, n, k) for _ in range(b)])
    keys = torch.rand(b, n, generator=rng)
    kk, vv = k, v
    if case == "int32_labels":
        labels = labels.int()
    elif case == "int_keys":
        keys = (keys * 10).long()
    elif case == "shape":
        keys = keys[:, :max(n - 1, 0)] if n else torch.rand(b, 1)
    elif case == "neg_v":
        vv = -1
    elif case == "neg_k":
        kk = -2
    elif case == "bad_label":
        labels = torch.stack([_labels(rng, max(n, 1), k, bad=True) for _ in range(b)])
        keys = torch.rand(labels.shape, generator=rng)
    elif case == "double_keys":
        keys = keys.double()
    elif case == "labels_1d":
        labels, keys = labels[0], keys[0]
    args = dict(labels=labels, keys=keys, num_per_class=vv, num_classes=kk, ignore_index=255)
    _compare(monkeypatch, ops.select_per_class, args, f"select_per_class[{case}]")


@pytest.mark.parametrize("seed", range(CASES))
def test_prcl_negatives_parity(monkeypatch, seed):
    rng = torch.Generator().manual_seed(seed)
    r, m, k = 3, 4, 3
    case = _mutations(seed, ["valid", "valid", "valid", "words_int64", "pix_int32", "row_sum", "start_out",
                             "count_zero", "cls_shape", "start_len", "words_len"])
    count = torch.tensor([3, 2, 4])
    start = torch.tensor([0, 3, 5])
    pixels = torch.randperm(9, generator=rng)
    counts = torch.zeros(r, k, dtype=torch.long)
    for row in range(r - 1):  # the last row has no mass
        cut = sorted(torch.randint(0, m + 1, (k - 1,), generator=rng).tolist())
        counts[row] = torch.tensor([cut[0], cut[1] - cut[0], m - cut[1]])
    words = torch.randint(0, 2**31 - 1, (r * m,), generator=rng, dtype=torch.int32)
    pix, cls = torch.empty(r, m, dtype=torch.long), torch.empty(r, m, dtype=torch.long)
    if case == "words_int64":
        words = words.long()
    elif case == "pix_int32":
        pix = pix.int()
    elif case == "row_sum":
        counts[0, 0] += 1
    elif case == "start_out":
        counts[0] = torch.tensor([0, 0, m])
        start = torch.tensor([0, 3, 6])  # class 2's block runs past the 9-pixel pool
    elif case == "count_zero":
        counts[0] = torch.tensor([m, 0, 0])
        count = torch.tensor([0, 2, 4])
    elif case == "cls_shape":
        cls = torch.empty(r, m + 1, dtype=torch.long)
    elif case == "start_len":
        start = start[:2]
    elif case == "words_len":
        words = words[:-1]
    args = dict(pix=pix, cls=cls, counts=counts, words=words, pixels=pixels, start=start, count=count, fill=-7)
    with monkeypatch.context() as mp:  # the fallback of prcl_negatives_ is the reference op
        mp.setattr(ops, "has_prcl_negatives_kernel", lambda t: ops._EXT and t.device.type == "cpu")
        _compare(monkeypatch, ops.prcl_negatives_, args, f"prcl_negatives_[{case}]")


def test_every_case_kind_is_drawn():
    """The seeded draws cover every mutation of every op (so each rejection is compared at least once)."""
    kinds = {"class_sums": 13, "prototype": 13, "memory": 14, "cosine": 13, "select": 10, "prcl": 11}
    for name, n in kinds.items():
        drawn = {random.Random(s).choice(range(n)) for s in range(CASES)}
        assert len(drawn) == n, (name, sorted(set(range(n)) - drawn))
