"""HiPoSeg loss terms against float64 loop oracles and hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from segproto.losses import (hierarchy_alignment_loss, online_prototypes, pixel_prototype_loss,
                             prototype_separation_loss)

D = 6


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float64), dim=1)


def rand_unit(n, seed, d=D):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


# --- oracles: plain Python loops over classes and pixels ----------------------------------------

def oracle_online(protos, feats, labels, m):
    q, valid = [], []
    for c in range(protos.shape[0]):
        rows = [feats[i] for i in range(len(labels)) if labels[i] == c]
        p = protos[c]
        if rows:
            mean = sum(rows) / len(rows)
            mu = mean / mean.norm()
            v = m * p + (1 - m) * mu
            q.append(v / v.norm())
        else:
            q.append(p)
        valid.append(bool(rows) or bool((p != 0).any()))
    return torch.stack(q), valid


def oracle_pixel(feats, labels, q, valid, tau, ignore=255):
    total, n = 0.0, 0
    for i in range(len(labels)):
        y = int(labels[i])
        if y == ignore:
            continue
        logits = {k: float(feats[i] @ q[k]) / tau for k in range(q.shape[0]) if valid[k]}
        total += -logits[y] + math.log(sum(math.exp(v) for v in logits.values()))
        n += 1
    return total / n


def oracle_separation(q, valid, kappa):
    idx = [k for k in range(q.shape[0]) if valid[k]]
    return sum(math.log(sum(math.exp((float(q[a] @ q[b]) - 1) / kappa) for b in idx)) for a in idx) / len(idx)


def oracle_align(qc, vc, qp, vp, parent, s1, s2):
    near = [max(float((qc[c] - qp[parent[c]]).norm()) - s1, 0.0) for c in range(len(qc)) if vc[c] and vp[parent[c]]]
    ip = [k for k in range(len(qp)) if vp[k]]
    far = [max(s2 - float((qp[a] - qp[b]).norm()), 0.0) for a in ip for b in ip if a != b]
    return (sum(near) / len(near) if near else 0.0) + (sum(far) / len(far) if far else 0.0)


# --- tests -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [0.0, 0.9, 1.0 - 1e-3])
def test_online_prototypes_match_loop_oracle(m):
    feats = rand_unit(30, 0)
    labels = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(1))
    labels[labels == 2] = 255  # class 2 absent from the batch
    labels[:3] = 255
    protos = torch.zeros(5, D, dtype=torch.float64)
    protos[1], protos[2] = rand_unit(1, 5)[0], rand_unit(1, 6)[0]  # 0, 3 unset and present; 4 unset, absent
    q, valid = online_prototypes(protos, feats, labels, m)
    want_q, want_valid = oracle_online(protos, feats, labels, m)
    torch.testing.assert_close(q, want_q, rtol=1e-12, atol=1e-12)
    assert valid.tolist() == want_valid == [True, True, True, True, False]
    torch.testing.assert_close(q[[0, 3]], oracle_online(torch.zeros(5, D, dtype=torch.float64), feats, labels, 0.0)[0][[0, 3]])


def test_online_prototypes_carry_gradient_to_feats_only():
    feats = rand_unit(12, 2).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 1, 255, 0, 1, 0, 1, 1, 0])
    protos = rand_unit(3, 3).requires_grad_()

    def f(x):
        return online_prototypes(protos, x, labels, 0.9)[0]

    assert torch.autograd.gradcheck(f, (feats,))
    f(feats).sum().backward()
    assert protos.grad is None  # the buffer is never differentiated
    assert feats.grad[5].abs().sum() == 0  # ignored pixel


def test_pixel_prototype_loss_matches_oracle_and_skips_invalid_classes():
    feats, q = rand_unit(20, 4), rand_unit(5, 7)
    labels = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(8))
    labels[::7] = 255
    valid = torch.tensor([True, True, True, False, True])
    got = pixel_prototype_loss(feats, labels, q, valid, tau=0.1)
    assert got.item() == pytest.approx(oracle_pixel(feats, labels, q, valid, 0.1), rel=1e-12)
    # an invalid class has no influence at all
    q2 = q.clone()
    q2[3] = feats[0]
    assert pixel_prototype_loss(feats, labels, q2, valid, tau=0.1).item() == pytest.approx(got.item(), rel=1e-14)


def test_pixel_prototype_loss_hand_value_and_all_ignored():
    # two orthogonal prototypes, a pixel on prototype 0 labelled 0: CE = log(1 + exp(-1/tau))
    q = unit([1, 0], [0, 1])
    f = unit([1, 0])
    got = pixel_prototype_loss(f, torch.tensor([0]), q, torch.tensor([True, True]), tau=0.5)
    assert got.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-12)
    none = pixel_prototype_loss(f.requires_grad_(), torch.tensor([255]), q, torch.tensor([True, True]), tau=0.5)
    assert none.item() == 0.0 and none.requires_grad


def test_prototype_separation_hand_values_and_oracle():
    kappa = 0.1
    ortho = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    all_valid = torch.ones(3, dtype=torch.bool)
    assert prototype_separation_loss(ortho, all_valid, kappa).item() == pytest.approx(
        math.log(1 + 2 * math.exp(-10.0)), rel=1e-12)
    same = unit([1, 0], [1, 0])  # identical prototypes: log(2) each
    assert prototype_separation_loss(same, torch.ones(2, dtype=torch.bool), kappa).item() == pytest.approx(math.log(2))
    q = rand_unit(6, 9)
    valid = torch.tensor([True, False, True, True, False, True])
    assert prototype_separation_loss(q, valid, 0.3).item() == pytest.approx(oracle_separation(q, valid, 0.3), rel=1e-12)
    assert prototype_separation_loss(q, torch.zeros(6, dtype=torch.bool), 0.3).item() == 0.0


def test_alignment_hand_values():
    # child 0 at distance 0.5 from its parent (sigma1 0.25 -> 0.25), child 1 on its parent (0);
    # the two parents orthogonal (distance sqrt 2 > sigma2 = 1 -> 0)
    qp = unit([1, 0, 0], [0, 1, 0])
    c0 = qp[0] + 0.5 * F.normalize(torch.tensor([0, 0, 1.0], dtype=torch.float64), dim=0)  # ||c0 - qp0|| = 0.5
    qc = torch.stack([c0, qp[1]])
    yes = torch.ones(2, dtype=torch.bool)
    got = hierarchy_alignment_loss(qc, yes, qp, yes, torch.tensor([0, 1]), sigma1=0.25, sigma2=1.0)
    assert got.item() == pytest.approx(0.125, rel=1e-12)  # mean(0.25, 0) + 0
    # parents 0.5 apart with sigma2 = 1: 0.5 for each ordered pair
    qp2 = torch.stack([qp[0], qp[0] + torch.tensor([0, 0.5, 0], dtype=torch.float64)])
    got2 = hierarchy_alignment_loss(qp2, yes, qp2, yes, torch.tensor([0, 1]), sigma1=0.0, sigma2=1.0)
    assert got2.item() == pytest.approx(0.5, rel=1e-12)


def test_alignment_matches_oracle_and_stays_finite_on_equal_prototypes():
    qc, qp = rand_unit(7, 10), rand_unit(3, 11)
    qp[2] = qp[1]  # two identical parents: the distance gradient must stay finite
    parent = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    vc = torch.tensor([True, True, False, True, True, True, True])
    vp = torch.tensor([True, True, True])
    got = hierarchy_alignment_loss(qc, vc, qp.requires_grad_(), vp, parent, 0.3, 1.0)
    assert got.item() == pytest.approx(oracle_align(qc, vc, qp.detach(), vp, parent, 0.3, 1.0), rel=1e-9)
    got.backward()
    assert torch.isfinite(qp.grad).all()
