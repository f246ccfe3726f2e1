"""PiCo loss pieces against independent float64 loop implementations of methods.md section 1."""

import math

import pytest
import torch
import torch.nn.functional as F

from segproto.losses.pico import memory_contrast_loss
from segproto.losses import (hardest_by_class, pico_contrast_loss, pixel_contrast_loss, sample_hard_anchors,
                             select_examples, synthesize_negatives)


def unit(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)


def loop_loss(a, la, c=None, lc=None, t=0.1, tb=0.07, extra=None, ignore=255):
    """Per anchor, per positive, exactly as written: l_ij = s_ij - log(exp(s_ij) + sum_N exp(s_ik))."""
    self_set = c is None
    c, lc = (a, la) if self_set else (c, lc)
    a, c = a.double().tolist(), c.double().tolist()
    la, lc = la.tolist(), lc.tolist()
    dot = lambda u, v: sum(x * y for x, y in zip(u, v)) / t  # noqa: E731
    per_anchor = []
    for i, (f, y) in enumerate(zip(a, la)):
        if y == ignore:
            continue
        pos = [j for j, z in enumerate(lc) if z == y and not (self_set and j == i)]
        neg = [j for j, z in enumerate(lc) if z != y and z != ignore]
        if not pos:
            continue
        neg_sum = sum(math.exp(dot(f, c[k])) for k in neg)
        if extra is not None:
            rows = extra[i] if extra.dim() == 3 else extra
            neg_sum += sum(math.exp(dot(f, e)) for e in rows.double().tolist())
        terms = [dot(f, c[j]) - math.log(math.exp(dot(f, c[j])) + neg_sum) for j in pos]
        per_anchor.append(sum(terms) / len(terms))
    return -(t / tb) * sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


# --- the loss ------------------------------------------------------------------------------------

@pytest.mark.parametrize("t, tb", [(0.1, 0.07), (0.07, 0.07), (0.5, 0.1)])
def test_batch_version_matches_loop(t, tb):
    a, la = unit(24, 6, 0), torch.randint(0, 4, (24,), generator=torch.Generator().manual_seed(1))
    got = pixel_contrast_loss(a, la, temperature=t, base_temperature=tb)
    assert got.item() == pytest.approx(loop_loss(a, la, t=t, tb=tb), rel=1e-10)


def test_memory_version_matches_loop_self_not_excluded():
    a, la = unit(10, 5, 0), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    c, lc = unit(30, 5, 1), torch.arange(30) % 4
    c[0] = a[0]  # a memory row equal to an anchor is still a positive (no self exclusion with memory)
    got = pixel_contrast_loss(a, la, c, lc, 0.07, 0.07)
    assert got.item() == pytest.approx(loop_loss(a, la, c, lc, 0.07, 0.07), rel=1e-10)


def test_float32_input_matches_float64_loop():
    a, la = unit(40, 16, 2, torch.float32), torch.arange(40) % 5
    assert pixel_contrast_loss(a, la).item() == pytest.approx(loop_loss(a, la), rel=1e-5)


def test_ignored_rows_take_no_part():
    a, la = unit(12, 4, 3), torch.tensor([0, 1, 255, 0, 1, 2, 255, 2, 0, 1, 2, 0])
    c, lc = unit(9, 4, 4), torch.tensor([0, 255, 1, 2, 0, 255, 1, 2, 0])
    assert pixel_contrast_loss(a, la).item() == pytest.approx(loop_loss(a, la), rel=1e-10)
    assert pixel_contrast_loss(a, la, c, lc).item() == pytest.approx(loop_loss(a, la, c, lc), rel=1e-10)


@pytest.mark.parametrize("per_anchor", [False, True])
def test_extra_negatives_match_loop(per_anchor):
    a, la = unit(8, 4, 5), torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    extra = unit(8 * 3, 4, 6).reshape(8, 3, 4) if per_anchor else unit(3, 4, 6)
    got = pixel_contrast_loss(a, la, extra_negatives=extra)
    assert got.item() == pytest.approx(loop_loss(a, la, extra=extra), rel=1e-10)
    assert got > pixel_contrast_loss(a, la)  # more negatives, larger loss


def test_one_pixel_of_a_class_is_left_out_without_nan():
    a = unit(5, 4, 7).requires_grad_()
    la = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one pixel: no positive, still a negative of others
    loss = pixel_contrast_loss(a, la)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()
    assert loss.item() == pytest.approx(loop_loss(a.detach(), la), rel=1e-10)


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [255, 255, 255, 255], []])
def test_no_positive_anywhere_gives_zero_with_grad(labels):
    la = torch.tensor(labels, dtype=torch.long)
    a = unit(len(labels), 4, 8).requires_grad_()
    loss = pixel_contrast_loss(a, la)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_no_negative_gives_zero_not_nan():
    a = unit(4, 3, 9).requires_grad_()
    loss = pixel_contrast_loss(a, torch.zeros(4, dtype=torch.long))  # l_ij = s - log(exp(s)) = 0
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12) and torch.isfinite(a.grad).all()


def test_small_temperature_is_stable():
    a, la = unit(30, 8, 10, torch.float32).requires_grad_(), torch.arange(30) % 3
    loss = pixel_contrast_loss(a, la, temperature=1e-3, base_temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(a.grad).all()


def test_gradcheck():
    a, c = unit(6, 3, 11).requires_grad_(), unit(7, 3, 12).requires_grad_()
    la, lc = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    assert torch.autograd.gradcheck(lambda x: pixel_contrast_loss(x, la), (a,))
    assert torch.autograd.gradcheck(lambda x, y: pixel_contrast_loss(x, la, y, lc), (a, c))


def test_pico_loss_all_equals_pixel_contrast_loss():
    a, la, c, lc = unit(16, 4, 13), torch.arange(16) % 3, unit(20, 4, 14), torch.arange(20) % 3
    assert pico_contrast_loss(a, la, c, lc).item() == pixel_contrast_loss(a, la, c, lc).item()


# --- the loss against class-major memories (memory_contrast_loss) ------------------------------

def memories(k, sizes, counts, d, seed, dtype=torch.float64, garbage=float("nan")):
    """Banks [K, M_b, D] of unit rows in the written slots and ``garbage`` in the others, and the
    same rows flattened with their labels (the masked loss's contrast set)."""
    g = torch.Generator().manual_seed(seed)
    banks, cnts, rows, labels = [], [], [], []
    for m, cnt in zip(sizes, counts):
        bank = F.normalize(torch.randn(k, m, d, generator=g, dtype=dtype), dim=2)
        cnt = torch.tensor(cnt, dtype=torch.long)
        written = torch.arange(m) < cnt[:, None]
        rows.append(bank[written].clone())
        labels.append(torch.arange(k).repeat_interleave(cnt))
        bank[~written] = garbage  # never read
        banks.append(bank)
        cnts.append(cnt)
    return banks, cnts, torch.cat(rows), torch.cat(labels)


def value_and_grad(fn, a):
    a = a.detach().clone().requires_grad_()
    loss = fn(a)
    (grad,) = torch.autograd.grad(loss, a)
    return loss.detach(), grad


MEMORY_CASES = {  # K, bank sizes, written slots per bank and class, anchor labels
    "two_banks": (4, (6, 3), ([6, 2, 0, 5], [3, 1, 2, 0]), [0, 1, 2, 3, 0, 1, 1, 3, 2, 0]),
    "empty_class_and_bank_gaps": (5, (4, 2), ([0, 4, 1, 0, 3], [2, 0, 0, 0, 1]), [0, 1, 2, 3, 4, 1, 4, 2]),
    "ignored_and_unknown_anchors": (3, (5,), ([5, 3, 2],), [0, 255, 1, 2, 7, 0, -1, 2]),
    "one_class_no_negatives": (3, (5, 2), ([0, 4, 0], [0, 2, 0]), [1, 1, 0, 2, 1]),
}


@pytest.mark.parametrize("case", sorted(MEMORY_CASES))
@pytest.mark.parametrize("t, tb", [(0.1, 0.07), (0.07, 0.07), (0.5, 0.1)])
def test_memory_contrast_loss_equals_masked_loss_and_loop(case, t, tb):
    """Reformulation check: per-class memory loss == masked loss on the written rows == float64 loop,
    value and gradient; never-written slots (NaN here) are never read."""
    k, sizes, counts, la = MEMORY_CASES[case]
    banks, cnts, rows, lc = memories(k, sizes, counts, 5, 30)
    la = torch.tensor(la)
    a = unit(la.numel(), 5, 31)
    got, g_got = value_and_grad(lambda x: memory_contrast_loss(x, la, banks, cnts, t, tb), a)
    want, g_want = value_and_grad(lambda x: pixel_contrast_loss(x, la, rows, lc, t, tb), a)
    assert got.dtype == torch.float64 and torch.isfinite(g_got).all()
    assert got.item() == pytest.approx(want.item(), rel=1e-12, abs=1e-14)
    assert got.item() == pytest.approx(loop_loss(a, la, rows, lc, t, tb), rel=1e-10, abs=1e-14)
    torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


def test_memory_contrast_loss_workspace_gives_the_same_bits():
    """A kept CPU workspace (reused, grown, shrunk, other dtype) changes nothing, and nothing the
    loss returns aliases it."""
    ws = {}
    for i, (case, dtype) in enumerate([(c, d) for c in sorted(MEMORY_CASES) for d in (torch.float32, torch.float64)]):
        k, sizes, counts, la = MEMORY_CASES[case]
        banks, cnts, _, _ = memories(k, sizes, counts, 5, 40 + i)
        banks = [b.to(dtype) for b in banks]
        la, a = torch.tensor(la), unit(len(la), 5, 50 + i).to(dtype)
        want, g_want = value_and_grad(lambda x: memory_contrast_loss(x, la, banks, cnts, 0.1, 0.07), a)
        got, g_got = value_and_grad(lambda x: memory_contrast_loss(x, la, banks, cnts, 0.1, 0.07, workspace=ws), a)
        assert torch.equal(got, want) and torch.equal(g_got, g_want), case
        if "sim" in ws:
            ws["sim"].fill_(float("nan"))  # scribbling on the workspace afterwards changes nothing returned
            assert torch.equal(got, want) and torch.equal(g_got, g_want)
    assert set(ws) == {"rows", "sim"}


def test_memory_contrast_loss_float32_small_temperature_and_gradcheck():
    banks, cnts, rows, lc = memories(4, (50, 10), ([50, 20, 0, 7], [10, 3, 1, 0]), 8, 32)
    la = torch.arange(24) % 4
    a = unit(24, 8, 33)
    for t in (0.07, 1e-3):  # 1e-3: logit spread 2000, far beyond float32's exp range
        want, g_want = value_and_grad(lambda x: pixel_contrast_loss(x, la, rows, lc, t, t), a)
        got, g_got = value_and_grad(
            lambda x: memory_contrast_loss(x, la, [b.float() for b in banks], cnts, t, t), a.float())
        assert got.dtype == torch.float32 and torch.isfinite(g_got).all()
        assert got.item() == pytest.approx(want.item(), rel=1e-5)
        torch.testing.assert_close(g_got.double(), g_want, rtol=1e-4, atol=1e-5 * g_want.abs().max().item())
    small = memories(3, (4, 2), ([3, 2, 1], [1, 0, 2]), 3, 34)
    x = unit(5, 3, 35).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: memory_contrast_loss(x, torch.tensor([0, 1, 2, 0, 2]), small[0], small[1]), (x,))


def test_memory_contrast_loss_edge_cases():
    banks, cnts, rows, lc = memories(3, (4,), ([0, 0, 0],), 3, 36)  # empty memory
    a = unit(5, 3, 37).requires_grad_()
    loss = memory_contrast_loss(a, torch.tensor([0, 1, 2, 0, 1]), banks, cnts)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(a.grad, torch.zeros_like(a))
    banks, cnts, rows, lc = memories(3, (4,), ([4, 2, 3],), 3, 38)
    empty = memory_contrast_loss(torch.zeros(0, 3, requires_grad=True), torch.zeros(0, dtype=torch.long), banks, cnts)
    assert empty.item() == 0.0 and empty.requires_grad
    with torch.no_grad():
        assert not memory_contrast_loss(unit(4, 3, 39), torch.tensor([0, 1, 2, 0]), banks, cnts).requires_grad
    # ignore_index inside [0, K): memory rows of that class take no part, as in the masked loss
    la, a = torch.tensor([0, 1, 2, 1, 0]), unit(5, 3, 40)
    got = memory_contrast_loss(a, la, banks, cnts, ignore_index=1)
    assert got.item() == pytest.approx(pixel_contrast_loss(a, la, rows, lc, ignore_index=1).item(), rel=1e-12)


def test_memory_contrast_loss_stays_float32_under_autocast():
    banks, cnts, _, _ = memories(3, (8, 4), ([8, 5, 2], [4, 0, 3]), 8, 41, dtype=torch.float32)
    a, la = unit(12, 8, 42, torch.float32), torch.arange(12) % 3
    want = memory_contrast_loss(a, la, banks, cnts)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = memory_contrast_loss(a.bfloat16(), la, banks, cnts)
        same = memory_contrast_loss(a, la, banks, cnts)
    assert got.dtype == same.dtype == torch.float32 and same.item() == want.item()
    assert got.item() == pytest.approx(want.item(), rel=2e-2)


# --- hard example selection ---------------------------------------------------------------------

def sort_reference(sim, mask, k, largest):
    """Per row: the valid columns sorted by hardness, first k."""
    out = []
    for s, m in zip(sim.tolist(), mask.tolist()):
        cols = [j for j in range(len(s)) if m[j]]
        out.append(sorted(cols, key=lambda j: -s[j] if largest else s[j])[:k])
    return out


@pytest.mark.parametrize("largest", [True, False])
def test_hardest_matches_sort_reference(largest):
    g = torch.Generator().manual_seed(0)
    sim, mask = torch.randn(9, 40, generator=g), torch.rand(9, 40, generator=g) < 0.3
    mask[0] = False  # no candidate
    mask[1, :2] = True
    mask[1, 2:] = False  # fewer than k
    idx, valid = select_examples(sim, mask, 5, "hardest", largest)
    for row, want in enumerate(sort_reference(sim, mask, 5, largest)):
        assert idx[row][valid[row]].tolist() == want


@pytest.mark.parametrize("largest", [True, False])
def test_semi_hard_draws_k_from_the_hardest_fraction(largest):
    g = torch.Generator().manual_seed(1)
    sim, mask = torch.randn(6, 400, generator=g), torch.rand(6, 400, generator=g) < 0.5
    mask[2, 5:] = False  # 5 candidates < k
    idx, valid = select_examples(sim, mask, 8, "semi_hard", largest, 0.1, torch.Generator().manual_seed(2))
    full = sort_reference(sim, mask, 400, largest)
    for row in range(6):
        n = len(full[row])
        pool = set(full[row][:min(n, max(8, math.ceil(0.1 * n)))])
        got = idx[row][valid[row]].tolist()
        assert len(got) == min(8, n) == len(set(got)) and set(got) <= pool
    again = select_examples(sim, mask, 8, "semi_hard", largest, 0.1, torch.Generator().manual_seed(2))
    assert torch.equal(idx, again[0]) and torch.equal(valid, again[1])
    other = select_examples(sim, mask, 8, "semi_hard", largest, 0.1, torch.Generator().manual_seed(3))
    assert not torch.equal(idx, other[0])


def test_random_selection_is_valid_and_distinct():
    g = torch.Generator().manual_seed(4)
    sim, mask = torch.randn(5, 50, generator=g), torch.rand(5, 50, generator=g) < 0.4
    idx, valid = select_examples(sim, mask, 6, "random", generator=torch.Generator().manual_seed(5))
    for row in range(5):
        got = idx[row][valid[row]].tolist()
        assert len(got) == min(6, int(mask[row].sum())) == len(set(got)) and all(mask[row, got])


def _labelled_case():
    """Anchors and an interleaved contrast set: ignored rows on both sides, a class (3) with fewer
    than k columns, one (4) with none, one (5) with no anchor."""
    la = torch.tensor([0, 1, 255, 3, 4, 0, 2, 1, 255, 4, 3, 2, 0])
    lc = torch.tensor([0, 1, 2, 255, 5] * 8 + [3, 3])
    return unit(13, 6, 30), la, unit(42, 6, 31), lc


def test_hardest_by_class_matches_sort_reference():
    a, la, c, lc = _labelled_case()
    sim = a @ c.t()
    ok = (la[:, None] != 255) & (lc[None, :] != 255)
    same = la[:, None] == lc[None, :]
    pi, pv, ni, nv = hardest_by_class(sim, la, lc, 5)
    assert pi.shape == ni.shape == (13, 5)
    for idx, valid, mask, largest in ((pi, pv, same & ok, False), (ni, nv, ~same & ok, True)):
        for row, want in enumerate(sort_reference(sim, mask, 5, largest)):
            assert valid[row].tolist() == [j < len(want) for j in range(5)]
            assert idx[row][valid[row]].tolist() == want
    assert pv[[2, 4, 8, 9]].sum() == 0 and pv[3].sum() == 2 and nv[[2, 8]].sum() == 0 and nv[4].all()


@pytest.mark.parametrize("synth", [0, 3])
def test_cpu_hardest_loss_and_gradient_equal_the_masked_selection(synth):
    """sampled_contrast_loss (hardest_by_class on the CPU) against the loss composed by hand from
    select_examples on explicit masks, value and gradient (the negative synthesis draws alike)."""
    a, la, c, lc = _labelled_case()
    a = a.requires_grad_()
    got = pico_contrast_loss(a, la, c, lc, sampling="hardest", hard_k=5, synth_neg_neg=synth,
                             synth_neg_anchor=synth, generator=torch.Generator().manual_seed(7))
    (g_got,) = torch.autograd.grad(got, a)
    sim = a @ c.t() / 0.1
    ok = (la[:, None] != 255) & (lc[None, :] != 255)
    same = la[:, None] == lc[None, :]
    pi, pv = select_examples(sim, same & ok, 5, "hardest", False)
    ni, nv = select_examples(sim, ~same & ok, 5, "hardest", True)
    pos, neg = sim.gather(1, pi), sim.gather(1, ni)
    lse = [torch.logsumexp(neg[i][nv[i]], 0) for i in range(13)]
    if synth:
        syn = synthesize_negatives(a, c, ni, nv, synth, synth, 0.5, torch.Generator().manual_seed(7))
        extra = torch.einsum("nd,ned->ne", a, syn.feats) / 0.1
        lse = [torch.logsumexp(torch.cat([neg[i][nv[i]], extra[i]]), 0) for i in range(13)]
    terms = [(pos[i][pv[i]] - torch.logaddexp(pos[i][pv[i]], lse[i])).mean() for i in range(13) if pv[i].any()]
    want = -(0.1 / 0.07) * torch.stack(terms).mean()
    (g_want,) = torch.autograd.grad(want, a)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.allclose(g_got, g_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sampling", ["hardest", "semi_hard", "random"])
def test_sampled_loss_matches_loop_on_the_selected_rows(sampling):
    a, la, c, lc = unit(6, 4, 15), torch.tensor([0, 1, 2, 0, 1, 2]), unit(60, 4, 16), torch.arange(60) % 3
    got = pico_contrast_loss(a, la, c, lc, sampling=sampling, hard_k=4, generator=torch.Generator().manual_seed(0))
    sim = a @ c.t()
    same = la[:, None] == lc[None, :]
    g = torch.Generator().manual_seed(0)
    pi, pv = select_examples(sim, same, 4, sampling, False, 0.1, g)
    ni, nv = select_examples(sim, ~same, 4, sampling, True, 0.1, g)
    want = []
    for i in range(6):  # each anchor against its own positives and negatives
        rows = torch.cat([c[pi[i][pv[i]]], c[ni[i][nv[i]]]])
        labs = torch.cat([lc[pi[i][pv[i]]], lc[ni[i][nv[i]]]])
        want.append(loop_loss(a[i:i + 1], la[i:i + 1], rows, labs))
    assert got.item() == pytest.approx(sum(want) / 6, rel=1e-9)


# --- hard negative synthesis ---------------------------------------------------------------------

def test_synthesis_unit_norm_detached_alpha_and_mixing():
    a = unit(5, 16, 17).requires_grad_()
    c = unit(30, 16, 18)
    sim = a.detach() @ c.t()
    neg = torch.ones(5, 30, dtype=torch.bool)
    neg[3] = False  # an anchor without negatives
    hi, hv = select_examples(sim, neg, 4, "hardest", True)
    syn = synthesize_negatives(a, c, hi, hv, 3, 6, 0.5, torch.Generator().manual_seed(0))
    assert syn.feats.shape == (5, 9, 16) and not syn.feats.requires_grad
    assert torch.allclose(syn.feats.norm(dim=2)[syn.mask], torch.ones(int(syn.mask.sum()), dtype=torch.float64))
    assert (syn.alpha >= 0).all() and (syn.alpha < 0.5).all()
    assert syn.mask[3].sum() == 0 and syn.mask[[0, 1, 2, 4]].all()
    for i in (0, 1, 2, 4):
        hard = c[hi[i]]  # [4, D]
        proj = hard.t() @ torch.linalg.lstsq(hard.t(), syn.feats[i, :3].t()).solution
        assert torch.allclose(proj, syn.feats[i, :3].t(), atol=1e-8)  # neg-neg mixes: in the hard span
        for e in range(6):  # neg-anchor mixes: normalize(alpha a + (1 - alpha) n) for a hard n
            cand = F.normalize(syn.alpha[i, e] * a[i].detach() + (1 - syn.alpha[i, e]) * hard, dim=1)
            assert (cand - syn.feats[i, 3 + e]).norm(dim=1).min() < 1e-10


def test_synthesis_alpha_bound_and_loss_effect():
    a, la, c, lc = unit(12, 8, 19), torch.arange(12) % 3, unit(45, 8, 20), torch.arange(45) % 3
    syn = synthesize_negatives(a, c, torch.zeros(12, 2, dtype=torch.long), torch.ones(12, 2, dtype=torch.bool),
                               0, 50, 0.2, torch.Generator().manual_seed(0))
    assert (syn.alpha < 0.2).all()
    base = pico_contrast_loss(a, la, c, lc)
    more = pico_contrast_loss(a, la, c, lc, synth_neg_neg=4, synth_neg_anchor=4, hard_k=5,
                              generator=torch.Generator().manual_seed(0))
    assert more > base  # appended negatives can only raise the loss


# --- segmentation-aware anchor sampling ----------------------------------------------------------

def loop_quota(labels, preds, k, max_samples, max_views, ignore=255):
    """The public code's per-image, per-class branches: {(b, c): (n_hard_keep, n_easy_keep)}."""
    pairs = []
    for b in range(labels.shape[0]):
        for c in sorted(set(labels[b].tolist()) - {ignore}):
            if int((labels[b] == c).sum()) > max_views:
                pairs.append((b, c))
    if not pairs:
        return {}
    n_view = min(max_samples // len(pairs), max_views)
    out = {}
    for b, c in pairs:
        n_hard = int(((labels[b] == c) & (preds[b] != c)).sum())
        n_easy = int(((labels[b] == c) & (preds[b] == c)).sum())
        if n_hard >= n_view / 2 and n_easy >= n_view / 2:
            keep = (n_view // 2, n_view - n_view // 2)
        elif n_hard >= n_view / 2:
            keep = (n_view - n_easy, n_easy)
        else:
            keep = (n_hard, n_view - n_hard)
        out[(b, c)] = keep
    return out


def random_case(seed, b=3, n=200, k=5, wrong=0.3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (b, n), generator=g)
    labels[:, :n // 10] = 255
    labels[0, n // 2:] = 0  # a dominant class
    preds = torch.where(torch.rand(b, n, generator=g) < wrong, torch.randint(0, k, (b, n), generator=g), labels)
    preds[1] = labels[1]  # image 1: no hard pixel at all (fill from easy)
    preds[2, labels[2] == 3] = 4  # class 3 of image 2: all hard (fill from hard)
    emb = torch.randn(b, n, 6, generator=g)
    return emb, labels, preds


@pytest.mark.parametrize("seed, max_samples, max_views", [(0, 64, 20), (1, 1024, 30), (2, 30, 10), (3, 500, 100)])
def test_sampler_counts_match_loop_reference(seed, max_samples, max_views):
    emb, labels, preds = random_case(seed)
    s = sample_hard_anchors(emb, labels, preds, 5, max_samples, max_views, generator=torch.Generator().manual_seed(7))
    want = loop_quota(labels, preds, 5, max_samples, max_views)
    got = {}
    for b, p, h in zip(s.image.tolist(), s.pixel.tolist(), s.hard.tolist()):
        c = int(labels[b, p])
        kh, ke = got.get((b, c), (0, 0))
        got[(b, c)] = (kh + h, ke + (not h))
    assert got == {key: v for key, v in want.items() if sum(v) > 0}
    assert torch.equal(s.feats, emb[s.image, s.pixel]) and torch.equal(s.labels, labels[s.image, s.pixel])
    assert torch.equal(s.hard, preds[s.image, s.pixel] != s.labels)
    assert len(set(zip(s.image.tolist(), s.pixel.tolist()))) == s.labels.numel()  # distinct pixels
    assert s.hard_frac.item() == pytest.approx(s.hard.float().mean().item())
    assert (s.labels != 255).all() and 0 in s.labels.tolist()  # class 0 takes part


def test_sampler_fill_up_cases():
    emb, labels, preds = random_case(0)
    s = sample_hard_anchors(emb, labels, preds, 5, 1024, 20, generator=torch.Generator().manual_seed(0))
    assert not s.hard[s.image == 1].any()  # no hard pixels in image 1: all easy
    sel = (s.image == 2) & (s.labels == 3)
    assert s.hard[sel].all() and int(sel.sum()) == 20  # class 3 of image 2 is all hard


def test_sampler_seed_determinism_and_uniform_use_of_pixels():
    emb, labels, preds = random_case(5)
    draw = lambda seed: sample_hard_anchors(emb, labels, preds, 5, 60, 10,  # noqa: E731
                                            generator=torch.Generator().manual_seed(seed))
    a, b, c = draw(1), draw(1), draw(2)
    assert torch.equal(a.pixel, b.pixel) and torch.equal(a.image, b.image)
    assert not torch.equal(a.pixel, c.pixel)
    seen = torch.zeros(labels.shape)
    for seed in range(200):  # every easy pixel of the dominant class gets drawn now and then
        s = draw(seed)
        seen[s.image, s.pixel] += 1
    easy0 = (labels[0] == 0) & (preds[0] == 0)
    assert (seen[0][easy0] > 0).float().mean() > 0.95


def test_sampler_edge_cases():
    emb = torch.randn(2, 10, 3)
    labels = torch.full((2, 10), 255)
    s = sample_hard_anchors(emb, labels, labels, 4, 100, 2)
    assert s.feats.shape == (0, 3) and s.hard_frac.item() == 0.0
    labels[0, :3] = 1  # 3 pixels <= max_views 3: not eligible
    assert sample_hard_anchors(emb, labels, labels, 4, 100, 3).labels.numel() == 0
    labels[0, 3] = 7
    with pytest.raises(ValueError, match="label 7 is outside"):
        sample_hard_anchors(emb, labels, labels, 4, 100, 3)


@pytest.mark.parametrize("seed, max_samples, max_views", [(0, 64, 20), (1, 1024, 30), (2, 30, 10), (4, 80, 400)])
def test_fixed_shape_sampler_is_the_compact_one_padded(seed, max_samples, max_views):
    """The sync-free path (the default off the CPU) draws the same anchors, then pads to max_samples."""
    emb, labels, preds = random_case(seed)
    draw = lambda fixed: sample_hard_anchors(emb, labels, preds, 5, max_samples, max_views,  # noqa: E731
                                             generator=torch.Generator().manual_seed(3), fixed_shape=fixed)
    a, f = draw(False), draw(True)
    s = a.labels.numel()
    assert f.labels.shape == (max_samples,) and f.feats.shape == (max_samples, 6)
    for name in ("feats", "labels", "image", "pixel", "hard"):
        assert torch.equal(getattr(f, name)[:s], getattr(a, name)), name
    assert (f.labels[s:] == 255).all() and not f.hard[s:].any()
    assert f.hard_frac.item() == pytest.approx(a.hard_frac.item()) and f.hard_frac.dtype == torch.float32


@pytest.mark.parametrize("memory", [False, True])
def test_padded_anchors_leave_the_losses_unchanged(memory):
    emb, labels, preds = random_case(6)
    emb = F.normalize(emb, dim=2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = sample_hard_anchors(emb, labels, preds, 5, 100, 10, generator=gen(), fixed_shape=False)
    f = sample_hard_anchors(emb, labels, preds, 5, 100, 10, generator=gen(), fixed_shape=True)
    assert f.labels.numel() > a.labels.numel()
    g = torch.Generator().manual_seed(1)
    banks = [F.normalize(torch.randn(5, 7, 6, generator=g), dim=2), F.normalize(torch.randn(5, 3, 6, generator=g), dim=2)]
    counts = [torch.tensor([7, 0, 3, 7, 1]), torch.tensor([3, 3, 0, 1, 2])]
    values, grads = [], []
    for sample in (a, f):
        x = sample.feats.clone().requires_grad_(True)
        if memory:
            loss = memory_contrast_loss(x, sample.labels, banks, counts, 0.1, 0.07)
        else:
            loss = pico_contrast_loss(x, sample.labels, sampling="hardest", hard_k=4)
        loss.backward()
        values.append(loss.detach())
        grads.append(x.grad)
    torch.testing.assert_close(values[1], values[0])
    torch.testing.assert_close(grads[1][:a.labels.numel()], grads[0])
    assert (grads[1][a.labels.numel():] == 0).all()


def test_fixed_shape_sampler_without_eligible_pairs():
    emb, labels = torch.randn(2, 10, 3), torch.full((2, 10), 255)
    labels[0, :3] = 1
    s = sample_hard_anchors(emb, labels, labels, 4, 16, 3, fixed_shape=True)
    assert s.labels.shape == (16,) and (s.labels == 255).all() and s.hard_frac.item() == 0.0


def test_loss_stays_float32_under_autocast():
    a, la = unit(20, 8, 21, torch.float32), torch.arange(20) % 3
    c, lc = unit(30, 8, 22, torch.float32), torch.arange(30) % 3
    want = pico_contrast_loss(a, la, c, lc, synth_neg_anchor=2, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = pico_contrast_loss(a, la, c, lc, synth_neg_anchor=2, generator=torch.Generator().manual_seed(0))
    assert got.dtype == torch.float32 and got.item() == want.item()
