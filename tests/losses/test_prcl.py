"""PRCL loss pieces against float64 loop oracles of methods.md section 3 and hand-computed values."""

import math

import pytest
import torch

from segproto.losses import (distribution_prototypes, gdp_update, mutual_likelihood_score,
                             mutual_likelihood_score_indexed, negative_class_probs, prcl_logits, prcl_loss,
                             prcl_sample, sample_anchors, sample_negative_pixels, virtual_negatives)

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rand_inputs(n, d, seed, dtype=F64):
    g = gen(seed)
    mu = torch.randn(n, d, generator=g, dtype=dtype)
    var = torch.rand(n, d, generator=g, dtype=dtype) * 0.8 + 0.1  # in (0.1, 0.9), like a sigmoid head
    return mu, var


# --- oracles ------------------------------------------------------------------------------------

def mls_loop(ma, va, mb, vb):
    """One pair, one dimension at a time, exactly as written in methods.md (python floats)."""
    ma, va, mb, vb = (x.tolist() for x in (ma, va, mb, vb))
    na, nb = math.sqrt(sum(x * x for x in ma)), math.sqrt(sum(x * x for x in mb))
    total = 0.0
    for d in range(len(ma)):
        s = va[d] + vb[d]
        total += (ma[d] / na - mb[d] / nb) ** 2 / s + math.log(s)
    return -0.5 * total / len(ma)


def mls_scalar_torch(ma, va, mb, vb):
    """Same formula on torch scalars, per dimension (differentiable oracle)."""
    na, nb = ma.norm(), mb.norm()
    terms = [(ma[d] / na - mb[d] / nb) ** 2 / (va[d] + vb[d]) + torch.log(va[d] + vb[d]) for d in range(ma.numel())]
    return -0.5 * torch.stack(terms).mean()


def oracle_prcl(mu, var, gdp_mu, gdp_prec, s, t):
    """Loop over classes, anchors and the sampled columns; CE with the positive at index 0."""
    per_class = []
    k, v = s.virtual.shape[1], s.virtual.shape[2]
    for ci, c in enumerate(s.classes.tolist()):
        per_anchor = []
        for a in range(s.anchors.shape[1]):
            i = int(s.anchors[ci, a])
            z = [mls_scalar_torch(mu[i], var[i], gdp_mu[c].to(F64), 1.0 / gdp_prec[c].to(F64))]
            if s.has_real[ci]:
                for j in s.negatives[ci, a].tolist():
                    z.append(mls_scalar_torch(mu[i], var[i], mu[j].detach(), var[j].detach()))
            for kk in range(k):
                if s.virtual_mask[ci, kk]:
                    for vv in range(v):
                        z.append(mls_scalar_torch(mu[i], var[i], s.virtual[ci, kk, vv], torch.zeros_like(mu[i])))
            z = torch.stack(z) / t
            per_anchor.append(torch.logsumexp(z, 0) - z[0])
        per_class.append(torch.stack(per_anchor).mean())
    return torch.stack(per_class).mean()


def chi2(observed, probs):
    n = sum(observed)
    return sum((o - n * p) ** 2 / (n * p) for o, p in zip(observed, probs) if p > 0)


# --- MLS ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 1, 40])
def test_mls_matches_loop_oracle(chunk):
    a_mu, a_var = rand_inputs(5, 6, 0)
    b_mu, b_var = rand_inputs(7, 6, 1)
    got = mutual_likelihood_score(a_mu, a_var, b_mu, b_var, chunk_elems=chunk)
    want = torch.tensor([[mls_loop(a_mu[i], a_var[i], b_mu[j], b_var[j]) for j in range(7)] for i in range(5)],
                        dtype=F64)
    assert got.shape == (5, 7) and got.dtype == F64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got32 = mutual_likelihood_score(a_mu.float(), a_var.float(), b_mu.float(), b_var.float(), chunk_elems=chunk)
    torch.testing.assert_close(got32, want.float(), rtol=1e-5, atol=1e-6)


def test_mls_hand_values_and_autocast():
    # a pixel with itself: the distance term vanishes, MLS = -1/2 mean log(2 v)
    mu = torch.tensor([[3.0, 4.0]], dtype=F64)
    var = torch.tensor([[0.5, 0.25]], dtype=F64)
    assert mutual_likelihood_score(mu, var, mu, var).item() == pytest.approx(-0.25 * (math.log(1.0) + math.log(0.5)))
    # orthogonal unit means: (1^2 / s1 + 1^2 / s2 + log s1 + log s2) / 2 dims, then * -1/2
    got = mutual_likelihood_score(torch.tensor([[2.0, 0.0]]), torch.tensor([[0.5, 0.5]]),
                                  torch.tensor([[0.0, 5.0]]), torch.tensor([[0.5, 1.5]]))
    assert got.item() == pytest.approx(-0.25 * (1.0 + 0.5 + math.log(2.0)), rel=1e-6)
    a_mu, a_var = rand_inputs(4, 8, 2, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = mutual_likelihood_score(a_mu.bfloat16(), a_var, a_mu, a_var)
    assert amp.dtype == torch.float32


def test_mls_gradcheck_dense_and_indexed():
    a_mu, a_var = rand_inputs(3, 4, 3)
    b_mu, b_var = rand_inputs(5, 4, 4)
    args = [x.clone().requires_grad_() for x in (a_mu, a_var, b_mu, b_var)]
    assert torch.autograd.gradcheck(lambda *x: mutual_likelihood_score(*x, chunk_elems=8), args)
    index = torch.tensor([[0, 4, 4, 1], [2, 2, 2, 3], [0, 1, 4, 0]])  # repeats: the bank gradient accumulates
    assert torch.autograd.gradcheck(lambda *x: mutual_likelihood_score_indexed(*x, index, chunk_elems=8), args)
    dense = mutual_likelihood_score(*args)
    torch.testing.assert_close(mutual_likelihood_score_indexed(*args, index), dense.gather(1, index))


# --- distribution prototypes and the GDP --------------------------------------------------------

def test_distribution_prototypes_match_loop_oracle_and_carry_gradient():
    mu, var = rand_inputs(20, 3, 5)
    labels = torch.randint(0, 3, (20,), generator=gen(6))
    labels[labels == 1] = 255  # class 1 absent
    labels[:2] = 255
    bp = distribution_prototypes(mu, var, labels, 4)
    for c in range(4):
        rows = [i for i in range(20) if labels[i] == c]
        assert int(bp.counts[c]) == len(rows)
        for d in range(3):
            prec = sum(1.0 / float(var[i, d]) for i in rows)
            num = sum(float(mu[i, d]) / float(var[i, d]) for i in rows)
            assert float(bp.prec_sum[c, d]) == pytest.approx(prec, rel=1e-12)
            assert float(bp.mu_prec_sum[c, d]) == pytest.approx(num, rel=1e-12)
            assert float(bp.var[c, d]) == pytest.approx(1.0 / prec if rows else 0.0, rel=1e-12)
            assert float(bp.mu[c, d]) == pytest.approx(num / prec if rows else 0.0, rel=1e-12)
    m, v = mu.clone().requires_grad_(), var.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: distribution_prototypes(a, b, labels, 4)[:2], (m, v))
    distribution_prototypes(m, v, labels, 4).mu.sum().backward()
    assert m.grad[:2].abs().sum() == 0 and m.grad[labels == 0].abs().sum() > 0


def test_gdp_update_hand_example_empty_start_and_decay():
    k, d = 3, 2
    empty_mu, empty_prec = torch.zeros(k, d, dtype=F64), torch.zeros(k, d, dtype=F64)
    # batch 1: class 0 only. prec = (1/.5 + 1/.5, 1/.25 + 1/.5) = (4, 6); mu/var sums = (1*2 + 3*2, 2*4 + 0) = (8, 8)
    mu1 = torch.tensor([[1.0, 2.0], [3.0, 0.0]], dtype=F64)
    var1 = torch.tensor([[0.5, 0.25], [0.5, 0.5]], dtype=F64)
    b1 = distribution_prototypes(mu1, var1, torch.tensor([0, 0]), k)
    torch.testing.assert_close(b1.prec_sum[0], torch.tensor([4.0, 6.0], dtype=F64))
    torch.testing.assert_close(b1.mu_prec_sum[0], torch.tensor([8.0, 8.0], dtype=F64))
    before = empty_mu.clone(), empty_prec.clone()
    g_mu, g_prec = gdp_update(empty_mu, empty_prec, b1.prec_sum, b1.mu_prec_sum)
    assert torch.equal(empty_mu, before[0]) and torch.equal(empty_prec, before[1])  # not in place
    torch.testing.assert_close(g_prec, torch.tensor([[4.0, 6.0], [0, 0], [0, 0]], dtype=F64))
    torch.testing.assert_close(g_mu, torch.tensor([[2.0, 4.0 / 3.0], [0, 0], [0, 0]], dtype=F64))
    # batch 2: class 0 pixel mu (0, 1) var (.25, 1): prec (4, 1); class 1 pixel mu (1, 1) var (1, 1)
    mu2 = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=F64)
    var2 = torch.tensor([[0.25, 1.0], [1.0, 1.0]], dtype=F64)
    b2 = distribution_prototypes(mu2, var2, torch.tensor([0, 1]), k)
    mu_a, prec_a = gdp_update(g_mu, g_prec, b2.prec_sum, b2.mu_prec_sum)
    torch.testing.assert_close(prec_a, torch.tensor([[8.0, 7.0], [1.0, 1.0], [0, 0]], dtype=F64))
    torch.testing.assert_close(mu_a, torch.tensor([[1.0, 9.0 / 7.0], [1.0, 1.0], [0, 0]], dtype=F64))
    assert torch.equal(gdp_update(g_mu, g_prec, b2.prec_sum, b2.mu_prec_sum, decay=1.0)[1], prec_a)
    # decay 0.5: prec = .5 * (4, 6) + (4, 1) = (6, 4); mu = (.5*4*2 / 6, (.5*6*4/3 + 1) / 4) = (2/3, 5/4)
    mu_d, prec_d = gdp_update(g_mu, g_prec, b2.prec_sum, b2.mu_prec_sum, decay=0.5)
    torch.testing.assert_close(prec_d, torch.tensor([[6.0, 4.0], [1.0, 1.0], [0, 0]], dtype=F64))
    torch.testing.assert_close(mu_d, torch.tensor([[2.0 / 3.0, 1.25], [1.0, 1.0], [0, 0]], dtype=F64))
    # a class absent from the update keeps its mean exactly; with decay its precision shrinks
    none = torch.zeros(k, d, dtype=F64)
    mu_n, prec_n = gdp_update(mu_a, prec_a, none, none, decay=0.5)
    assert torch.equal(mu_n, mu_a)
    torch.testing.assert_close(prec_n, prec_a * 0.5)
    with pytest.raises(ValueError, match="decay"):
        gdp_update(mu_a, prec_a, none, none, decay=0.0)


def test_virtual_negatives_shape_seed_and_moments():
    mu = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [3.0, 1.0, -1.0]], dtype=F64)
    prec = torch.tensor([[4.0, 1.0, 100.0], [0.0, 0.0, 0.0], [0.25, 2.0, 1.0]], dtype=F64)
    a = virtual_negatives(mu, prec, 5, generator=gen(0))
    assert a.shape == (3, 5, 3)
    assert torch.equal(a, virtual_negatives(mu, prec, 5, generator=gen(0)))
    assert not torch.equal(a, virtual_negatives(mu, prec, 5, generator=gen(1)))
    assert torch.equal(a[1], torch.zeros(5, 3, dtype=F64))  # no GDP: no noise (and masked by the loss)
    big = virtual_negatives(mu, prec, 40000, radius=2.0, generator=gen(2))
    for c in (0, 2):
        torch.testing.assert_close(big[c].mean(0), mu[c], atol=0.05, rtol=0)
        torch.testing.assert_close(big[c].var(0), 4.0 / prec[c], rtol=0.05, atol=0)


# --- sampling -----------------------------------------------------------------------------------

def test_sample_negative_pixels_frequencies_validity_and_determinism():
    labels = torch.tensor([0] * 5 + [1] * 30 + [2] * 2 + [255] * 7 + [4] * 9)  # class 3 has no pixel
    labels = labels[torch.randperm(labels.numel(), generator=gen(0))]
    probs = torch.tensor([[0.1, 0.5, 0.2, 0.0, 0.2],
                          [0.0, 0.0, 0.0, 0.0, 0.0],  # no mass: -1
                          [1.0, 1.0, 1.0, 5.0, 1.0]])  # unnormalised; class 3 has no pixel -> dropped
    s = 20000
    pix, cls = sample_negative_pixels(labels, probs, s, generator=gen(1))
    assert pix.shape == cls.shape == (3, s)
    assert (pix[1] == -1).all() and (cls[1] == -1).all()
    for r in (0, 2):
        assert (labels[pix[r]] == cls[r]).all()  # every negative is a valid pixel of its drawn class
        p = probs[r].clone()
        p[3] = 0
        p = (p / p.sum()).tolist()
        counts = torch.bincount(cls[r], minlength=5).tolist()
        assert counts[3] == 0
        assert chi2(counts, p) < 25.0  # 4 dof: P(chi2 > 25) ~ 5e-5
    # uniform over the pixels of a class
    in1 = torch.nonzero(labels == 1).squeeze(1)
    hits = torch.bincount(pix[0][cls[0] == 1], minlength=labels.numel())[in1].tolist()
    assert chi2(hits, [1 / len(in1)] * len(in1)) < 70.0  # 29 dof: P(chi2 > 70) ~ 3e-5
    again = sample_negative_pixels(labels, probs, s, generator=gen(1))
    assert torch.equal(again[0], pix) and torch.equal(again[1], cls)


def scene(n=400, d=8, k=5, seed=0):
    """Pixels of classes 0..3 (class 4 absent), some ignored, probs mostly confident."""
    g = gen(seed)
    mu, var = rand_inputs(n, d, seed + 100)
    labels = torch.randint(0, 4, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.1] = 255
    probs = torch.rand(n, generator=g) * 0.5 + 0.5
    return mu, var, labels, probs


def full_gdp(mu, var, labels, k):
    b = distribution_prototypes(mu, var, labels, k)
    return gdp_update(torch.zeros(k, mu.shape[1], dtype=F64), torch.zeros(k, mu.shape[1], dtype=F64),
                      b.prec_sum, b.mu_prec_sum)


def test_prcl_sample_negative_classes_follow_softmax_of_prototype_mls():
    k, t = 5, 0.05
    mu, var, labels, probs = scene()
    g_mu, _ = full_gdp(mu, var, labels, k)
    # moderate GDP variances, so that the class distribution is far from one-hot at this T
    g_prec = torch.rand(k, 8, generator=gen(9), dtype=F64) * 3 + 1
    g_mu[4] = torch.randn(8, dtype=F64)  # class 4 has a GDP but no pixel in the batch
    s = prcl_sample(mu, var, labels, probs, g_mu, g_prec, num_anchors=500, num_negatives=60, temperature=t,
                    generator=gen(3))
    assert s.classes.tolist() == [0, 1, 2, 3]
    for ci, c in enumerate(s.classes.tolist()):
        others = [o for o in range(4) if o != c]  # present classes only: 4 has no pixel
        z = [mls_loop(g_mu[c], 1 / g_prec[c], g_mu[o], 1 / g_prec[o]) / t for o in others]
        zmax = max(z)
        p = [math.exp(x - zmax) for x in z]
        p = [x / sum(p) for x in p]
        torch.testing.assert_close(s.class_probs[ci, others], torch.tensor(p, dtype=F64).to(s.class_probs.dtype),
                                   rtol=1e-5, atol=1e-7)
        assert min(p) > 0.02  # a meaningful test: every other class is drawn often
        drawn = s.negative_classes[ci].reshape(-1)
        assert (drawn != c).all() and (drawn != 4).all()
        counts = torch.bincount(drawn, minlength=k)[others].tolist()
        assert chi2(counts, p) < 22.0  # 2 dof: P(chi2 > 22) ~ 2e-5
        assert (labels[s.negatives[ci]] == s.negative_classes[ci]).all()
        # anchors: hard pixels of the class
        a = s.anchors[ci]
        assert (labels[a] == c).all() and (probs[a] < 0.8).all()
        # virtual negatives: every other class with a GDP (4 included), never c itself
        assert s.virtual_mask[ci].tolist() == [o != c for o in range(k)]


def test_prcl_sample_is_deterministic_given_the_generator():
    mu, var, labels, probs = scene(seed=1)
    g_mu, g_prec = full_gdp(mu, var, labels, 5)
    kw = dict(num_anchors=16, num_negatives=20, num_virtual=2)
    a = prcl_sample(mu, var, labels, probs, g_mu, g_prec, generator=gen(7), **kw)
    b = prcl_sample(mu, var, labels, probs, g_mu, g_prec, generator=gen(7), **kw)
    c = prcl_sample(mu, var, labels, probs, g_mu, g_prec, generator=gen(8), **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.negatives, c.negatives)


def test_anchors_hard_set_skip_and_fallback():
    labels = torch.tensor([0, 0, 0, 1, 1, 255, 2])
    probs = torch.tensor([0.9, 0.3, 0.95, 0.99, 0.85, 0.1, 0.5])
    classes = torch.tensor([0, 1, 2])
    anchors, ok = sample_anchors(labels, probs, classes, 50, 0.8, 3, generator=gen(0))
    assert ok.tolist() == [True, False, True]  # class 1 has no pixel below 0.8: skipped (public code)
    assert set(anchors[0].tolist()) == {1} and set(anchors[2].tolist()) == {6}
    anchors, ok = sample_anchors(labels, probs, classes, 200, 0.8, 3, fallback=True, generator=gen(0))
    assert ok.all() and set(anchors[1].tolist()) == {3, 4}  # fallback: all valid pixels of class 1
    assert set(anchors[0].tolist()) == {1}  # the hard set still wins where it exists


def test_prcl_sample_negative_classes_pixels_and_never_the_anchor_class():
    """Distribution-level check of the vectorised negatives at many draws, fixed seed: class
    frequencies against ``class_probs`` (chi-square), uniform pixels within each class, valid pixels
    of the drawn class only, never the anchor's class."""
    k, t = 5, 0.05
    mu, var, labels, probs = scene(n=600, seed=12)
    labels[labels == 3] = torch.where(torch.rand(int((labels == 3).sum()), generator=gen(1)) < 0.7, 255, 3)
    g_mu, _ = full_gdp(mu, var, labels, k)
    g_prec = torch.rand(k, 8, generator=gen(9), dtype=F64) * 3 + 1
    s = prcl_sample(mu, var, labels, probs, g_mu, g_prec, num_anchors=100, num_negatives=400, temperature=t,
                    generator=gen(13))
    assert s.classes.tolist() == [0, 1, 2, 3]
    assert (s.negative_classes != s.classes.view(-1, 1, 1)).all()
    assert (labels[s.negatives] == s.negative_classes).all()  # valid pixels of the drawn class
    for ci, c in enumerate(s.classes.tolist()):
        others = [o for o in range(4) if o != c]
        p = s.class_probs[ci, others].double()
        assert float(p.sum()) == pytest.approx(1.0) and float(p.min()) > 0.02
        counts = torch.bincount(s.negative_classes[ci].reshape(-1), minlength=k)[others].tolist()
        assert chi2(counts, p.tolist()) < 22.0  # 2 dof: P(chi2 > 22) ~ 2e-5
    for c in range(4):  # uniform over the valid pixels of c (class 3 is small: 30% kept)
        px = torch.nonzero(labels == c).squeeze(1)
        hits = torch.bincount(s.negatives[s.negative_classes == c], minlength=labels.numel())[px].tolist()
        dof = len(px) - 1
        assert chi2(hits, [1 / len(px)] * len(px)) < dof + 5 * math.sqrt(2 * dof)  # ~5 sd


def test_negatives_are_deterministic_and_independent_of_the_block_size():
    from segproto.losses import prcl as P

    labels = torch.randint(0, 6, (3000,), generator=gen(0))
    labels[torch.rand(3000, generator=gen(1)) < 0.1] = 255
    labels[labels == 4] = 255  # class 4 has no pixel
    probs = torch.rand(7, 6, generator=gen(2), dtype=F64)
    probs[3] = 0  # a row without mass: fill and class -1
    probs[5, :4] = 0  # only class 4 (no pixel) and 5
    pool = P._class_pool(labels, labels != 255, 6)
    ref = P._negatives_from_pool(pool, probs, 300, gen(3))
    for chunk in (1, 300, 7 * 300, 1 << 20):  # 1 row per block ... one block
        out = P._negatives_from_pool(pool, probs, 300, gen(3), chunk_elems=chunk)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
    assert (ref[0][3] == -1).all() and (ref[1][3] == -1).all()
    assert (ref[1][5] == 5).all() and (labels[ref[0][5]] == 5).all()
    ok = torch.ones(7, dtype=torch.bool)
    ok[3] = False
    assert (labels[ref[0][ok]] == ref[1][ok]).all()
    assert not torch.equal(P._negatives_from_pool(pool, probs, 300, gen(4))[0], ref[0])


def test_negative_offsets_are_exact_lemire_with_rejection(monkeypatch):
    """The pixel offset of a draw in a class of n pixels is Lemire's (v * n) >> 31 on a 31-bit word,
    v = (w + 1) mod 2^31 (w = 2^31 - 1 wraps to v = 0), and the draws with
    (v * n) mod 2^31 < 2^31 mod n take new words (in position order) until accepted."""
    from segproto.losses import prcl as P

    top = 1 << 31
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])  # class 0: n = 3 (2^31 mod 3 = 2); class 1: n = 5 (3)
    pool = P._class_pool(labels, labels != 255, 2)
    words = [top - 1, 0, 715827882, 715827881, 1431655764, top - 2,  # row 0, class 0
             1717986918, 0, 0, 0, 0, 0,  # row 1, class 1: v = 1717986919, (5 v) mod 2^31 = 3: a suspect, kept
             0, top - 1,  # redraws of row 0, draws 0 and 2 (v = 0: rejected again; v = 2^31 - 1: offset 2)
             5]  # second redraw of draw 0: offset 0
    queue = list(words)

    def fake_words(out, generator):
        out.copy_(torch.tensor([queue.pop(0) for _ in range(out.numel())], dtype=out.dtype))
        return out

    monkeypatch.setattr(P, "_random_words", fake_words)
    pix, cls = P._negatives_from_pool(pool, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64), 6, gen(0))
    assert not queue
    # v: 0 -> rejected; 1 -> 0; 715827883 (3v mod 2^31 = 1 < 2) -> rejected; 715827882 -> 0;
    # 1431655765 -> 1; 2^31 - 1 -> 2
    assert pix[0].tolist() == [0, 0, 2, 0, 1, 2] and cls[0].tolist() == [0] * 6
    assert pix[1].tolist() == [3 + 4, 3, 3, 3, 3, 3] and cls[1].tolist() == [1] * 6


# --- the loss -----------------------------------------------------------------------------------

@pytest.mark.parametrize("only_one_class", [False, True])
def test_prcl_loss_equals_loop_oracle_value_and_gradient(only_one_class):
    k, t = 4, 0.5
    mu, var, labels, probs = scene(n=60, d=5, seed=2)
    if only_one_class:  # no real negatives: the virtual negatives of the other GDPs carry the loss
        labels[(labels != 255) & (labels != 1)] = 255
    g_mu, g_prec = full_gdp(mu, var, labels, k)
    if only_one_class:
        g_mu[0], g_prec[0] = torch.randn(5, dtype=F64), torch.full((5,), 5.0, dtype=F64)
    m, v = mu.clone().requires_grad_(), var.clone().requires_grad_()
    loss, diag = prcl_loss(m, v, labels, probs, g_mu, g_prec, num_anchors=4, num_negatives=6, num_virtual=2,
                           temperature=t, generator=gen(4))
    s = diag["sample"]
    assert s.classes.tolist() == ([1] if only_one_class else [0, 1, 2, 3])
    assert s.has_real.tolist() == [not only_one_class] * len(s.classes)
    m2, v2 = mu.clone().requires_grad_(), var.clone().requires_grad_()
    want = oracle_prcl(m2, v2, g_mu, g_prec, s, t)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(want.item(), rel=1e-10)
    loss.backward()
    want.backward()
    torch.testing.assert_close(m.grad, m2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(v.grad, v2.grad, rtol=1e-9, atol=1e-12)
    assert m.grad[s.anchors.reshape(-1)].abs().sum() > 0


def test_prcl_logits_gradcheck_with_negative_gradients():
    mu, var, labels, probs = scene(n=30, d=3, seed=3)
    g_mu, g_prec = full_gdp(mu, var, labels, 5)
    s = prcl_sample(mu, var, labels, probs, g_mu, g_prec, num_anchors=2, num_negatives=3, generator=gen(5))
    args = (mu.clone().requires_grad_(), var.clone().requires_grad_())
    assert torch.autograd.gradcheck(
        lambda a, b: prcl_logits(a, b, g_mu, g_prec, s, detach_negatives=False, chunk_elems=16)[0], args)


def test_classes_without_gdp_or_pixels_are_skipped():
    k = 5
    mu, var, labels, probs = scene(n=200, d=4, seed=4)
    g_mu, g_prec = full_gdp(mu, var, labels, k)
    g_prec[2] = 0  # class 2 is in the batch but has no GDP yet: no anchors, no virtual negative
    g_mu[2] = 0
    loss, diag = prcl_loss(mu, var, labels, probs, g_mu, g_prec, num_anchors=8, num_negatives=10,
                           temperature=100.0, generator=gen(0))
    s = diag["sample"]
    assert s.classes.tolist() == [0, 1, 3]  # 4: no pixel; 2: no GDP
    assert not s.virtual_mask[:, 2].any() and not s.virtual_mask[:, 4].any()
    assert (s.negative_classes == 2).any()  # its pixels are still real negatives (batch prototype)
    assert torch.isfinite(loss) and diag["num_classes"] == 3


@pytest.mark.parametrize("case", ["all_ignored", "no_gdp", "empty"])
def test_zero_loss_with_gradient_when_nothing_takes_part(case):
    mu, var, labels, probs = scene(n=50, d=4, seed=5)
    g_mu, g_prec = full_gdp(mu, var, labels, 5)
    if case == "all_ignored":
        labels = torch.full_like(labels, 255)
    elif case == "no_gdp":
        g_prec = torch.zeros_like(g_prec)
    else:
        mu, var, labels, probs = mu[:0], var[:0], labels[:0], probs[:0]
    m, v = mu.clone().requires_grad_(), var.clone().requires_grad_()
    loss, diag = prcl_loss(m, v, labels, probs, g_mu, g_prec, num_anchors=8, num_negatives=10, generator=gen(0))
    assert loss.item() == 0.0 and loss.requires_grad and diag["num_classes"] == 0
    loss.backward()
    assert (m.grad == 0).all() and (v.grad == 0).all()


def test_batch_negative_protos_and_bad_labels():
    mu, var, labels, probs = scene(n=120, d=4, seed=6)
    g_mu, g_prec = full_gdp(mu, var, labels, 5)
    s = prcl_sample(mu, var, labels, probs, g_mu, g_prec, num_anchors=4, num_negatives=5, negative_protos="batch",
                    temperature=0.3, generator=gen(0))
    b = distribution_prototypes(mu, var, labels, 5)
    want = negative_class_probs(b.mu, b.var.clamp_min(1e-300), s.classes, b.counts > 0, 0.3)
    torch.testing.assert_close(s.class_probs, want)
    labels[3] = 7
    with pytest.raises(ValueError, match="label 7"):
        prcl_loss(mu, var, labels, probs, g_mu, g_prec)
    with pytest.raises(ValueError, match="negative_protos"):
        prcl_sample(mu, var, labels, probs, g_mu, g_prec, negative_protos="local")


def test_prcl_loss_float32_finite_differentiable_and_deterministic():
    mu, var, labels, probs = scene(n=300, d=16, seed=7)
    g_mu, g_prec = full_gdp(mu, var, labels, 5)
    mu, var = mu.float(), var.float()
    runs = []
    for _ in range(2):
        m, v = mu.clone().requires_grad_(), var.clone().requires_grad_()
        loss, diag = prcl_loss(m, v, labels, probs, g_mu.float(), g_prec.float(), num_anchors=16, num_negatives=32,
                               generator=gen(11))
        loss.backward()
        runs.append((loss.detach(), m.grad, v.grad))
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert torch.isfinite(m.grad).all() and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
        assert math.isfinite(diag["pos_mls"]) and math.isfinite(diag["neg_mls"]) and math.isfinite(diag["virtual_mls"])
    assert all(torch.equal(x, y) for x, y in zip(*runs))
