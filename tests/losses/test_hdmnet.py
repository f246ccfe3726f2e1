"""HDMNet correlation distillation against a float64 loop oracle of methods.md section 4."""

import math

import pytest
import torch

from segproto.losses import correlation_distillation_loss

F64 = torch.float64


# --- oracle: plain Python floats, written from the formulas -----------------------------------------

def bilinear_loop(x, out_h, out_w):
    """align_corners=False bilinear resize of a list-of-lists map (PyTorch's source-index rule)."""
    in_h, in_w = len(x), len(x[0])

    def src(i, n_in, n_out):
        s = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        return i0, i1, s - i0

    out = []
    for i in range(out_h):
        y0, y1, ly = src(i, in_h, out_h)
        row = []
        for j in range(out_w):
            x0, x1, lx = src(j, in_w, out_w)
            top = (1 - lx) * x[y0][x0] + lx * x[y0][x1]
            bot = (1 - lx) * x[y1][x0] + lx * x[y1][x1]
            row.append((1 - ly) * top + ly * bot)
        out.append(row)
    return out


def log_softmax_loop(v):
    mx = max(v)
    lse = mx + math.log(sum(math.exp(a - mx) for a in v))
    return [a - lse for a in v]


def distill_oracle(maps, mask):
    """L_distill exactly as methods.md, image by image, stage by stage."""
    total = 0.0
    for s, w in enumerate(maps):
        stage = 0.0
        for b in range(w.shape[0]):
            if s == 0:
                t = [[1.0 if v == 1 else -1e9 for v in row] for row in mask[b].tolist()]
            else:
                t = maps[s - 1][b].tolist()
            if (len(t), len(t[0])) != tuple(w.shape[1:]):
                t = bilinear_loop(t, w.shape[1], w.shape[2])
            lt = log_softmax_loop([v for row in t for v in row])
            ls = log_softmax_loop(w[b].flatten().tolist())
            stage += sum(math.exp(a) * (a - c) for a, c in zip(lt, ls))
        total += stage / w.shape[0]
    return total / len(maps)


def make_case(sizes, mask_hw, b=2, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(b, h, w, generator=g, dtype=dtype).mul_(3).requires_grad_() for h, w in sizes]
    mask = torch.randint(0, 2, (b, *mask_hw), generator=g)
    mask[torch.rand(b, *mask_hw, generator=g) < 0.2] = 255  # 255 counts as background here
    return maps, mask


@pytest.mark.parametrize("sizes,mask_hw", [
    ([(6, 5)], (6, 5)),                         # one stage, no resize
    ([(2, 2), (4, 4), (8, 8)], (16, 16)),       # integer scales
    ([(3, 5), (6, 7), (6, 7)], (13, 11)),       # general scales and an equal-size stage
    ([(4, 4), (2, 3)], (8, 8)),                 # a finer stage followed by a coarser one
])
def test_matches_loop_oracle(sizes, mask_hw):
    maps, mask = make_case(sizes, mask_hw)
    got = correlation_distillation_loss(maps, mask)
    assert got.dtype == F64
    # rel 1e-7: the oracle resizes -1e9 directly, whose float64 rounding (~1e-7) is visible in
    # the teacher when no pixel is purely foreground
    assert got.item() == pytest.approx(distill_oracle(maps, mask), rel=1e-7, abs=1e-9)


def test_float32_maps_close_to_float64_oracle():
    maps, mask = make_case([(3, 5), (6, 7)], (13, 11), dtype=torch.float32)
    got = correlation_distillation_loss(maps, mask)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(distill_oracle(maps, mask), rel=1e-5, abs=1e-5)


def test_gradient_only_into_each_student():
    """Teachers are detached: d L / d w_s = (softmax(w_s) - softmax(t_s)) / (B * S), with t_s the
    (fixed) previous stage; a non-detached teacher would add a second term."""
    maps, mask = make_case([(2, 3), (4, 6), (8, 12)], (16, 24), b=3, seed=1)
    correlation_distillation_loss(maps, mask).backward()
    b, n_stages = 3, len(maps)
    for s, w in enumerate(maps):
        for i in range(b):
            if s == 0:
                t = [[1.0 if v == 1 else -1e9 for v in row] for row in mask[i].tolist()]
            else:
                t = maps[s - 1][i].tolist()
            t = bilinear_loop(t, w.shape[1], w.shape[2])
            pt = torch.tensor(log_softmax_loop([v for row in t for v in row]), dtype=F64).exp()
            ps = torch.softmax(w[i].detach().flatten(), 0)
            want = ((ps - pt) / (b * n_stages)).view(w.shape[1:])
            torch.testing.assert_close(w.grad[i], want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("fill", [0, 255])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_all_background_gives_uniform_teacher(fill, dtype):
    """No foreground: softmax(teacher_0) is uniform, also after a non-integer resize in float32
    (where resizing -1e9 naively picks up rounding errors of tens of units)."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(2, 7, 9, generator=g, dtype=dtype)
    mask = torch.full((2, 30, 41), fill)
    got = correlation_distillation_loss([w], mask)
    n = 7 * 9
    want = sum(sum(-math.log(n) / n - a / n for a in log_softmax_loop(w[i].flatten().tolist()))
               for i in range(2)) / 2  # KL(uniform || softmax(w))
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert got.item() == pytest.approx(distill_oracle([w.double()], mask), rel=1e-5, abs=1e-6)


def test_zero_when_student_matches_teacher():
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, 1:3, 1:3] = 1
    w = torch.where(mask == 1, 1.0, -1e9).to(F64)  # stage 0 equal to the ground-truth teacher
    assert correlation_distillation_loss([w, w.clone()], mask).item() == pytest.approx(0.0, abs=1e-12)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="query_mask"):
        correlation_distillation_loss([torch.zeros(1, 2, 2)], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="non-empty"):
        correlation_distillation_loss([], torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"maps\[1\]"):
        correlation_distillation_loss([torch.zeros(1, 2, 2), torch.zeros(2, 2, 2)], torch.zeros(1, 2, 2))
