"""FewShotEvaluator: PFENet/HDMNet mIoU (per-class accumulation) and FB-IoU, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segproto import evaluation
from segproto.evaluation import FewShotEvaluator

I = 255
# three 2x3 episodes; IoUs worked out by hand (ignore pixels excluded from both sides)
GT = torch.tensor([[[1, 1, 0], [0, I, 0]],    # cls 3
                   [[1, 1, 1], [0, 0, 0]],    # cls 7
                   [[0, 0, 0], [0, 0, 1]]])   # cls 3
PRED = torch.tensor([[[1, 0, 0], [1, 1, 0]],
                     [[1, 1, 1], [1, 0, 0]],
                     [[0, 0, 0], [0, 0, 0]]])
CLS = torch.tensor([3, 7, 3])
# episode 1: fg I=1 U=3, bg I=2 U=4; episode 2: fg 3/4, bg 2/3; episode 3: fg 0/1, bg 5/6
# class 3: (1 + 0) / (3 + 1) = 0.25; class 7: 3/4; FB: fg 4/8, bg 9/13


def test_hand_computed_table():
    ev = FewShotEvaluator([3, 7, 11])
    ev.update(PRED, GT, CLS)
    m = ev.compute()
    assert m["class_IoU"][3] == pytest.approx(25.0)
    assert m["class_IoU"][7] == pytest.approx(75.0)
    assert math.isnan(m["class_IoU"][11])  # never seen: excluded from the mean
    assert m["mIoU"] == pytest.approx(50.0)
    assert m["FB-IoU"] == pytest.approx((0.5 + 9 / 13) / 2 * 100)
    assert m["episodes"] == 3


def test_per_class_accumulation_not_per_episode_mean():
    ev = FewShotEvaluator([3])
    ev.update(PRED[[0, 2]], GT[[0, 2]], [3, 3])
    assert ev.compute()["mIoU"] == pytest.approx(25.0)  # per-episode mean would be 16.67


def test_batching_logits_and_reset():
    one = FewShotEvaluator([3, 7])
    for b in range(3):
        one.update(PRED[b:b + 1], GT[b:b + 1], CLS[b:b + 1])
    logits = torch.stack([1 - PRED, PRED], 1).float()  # [B, 2, H, W]
    batch = FewShotEvaluator([3, 7])
    batch.update(logits, GT, CLS.tolist())
    assert one.compute() == batch.compute()
    batch.reset()
    empty = batch.compute()
    assert empty["episodes"] == 0 and math.isnan(empty["mIoU"]) and math.isnan(empty["FB-IoU"])


def test_matches_numpy_reference_on_random_episodes():
    g = torch.Generator().manual_seed(0)
    classes = [2, 5, 9, 13]
    gt = torch.randint(0, 2, (12, 8, 8), generator=g)
    gt[torch.rand(12, 8, 8, generator=g) < 0.1] = I
    pred = torch.randint(0, 2, (12, 8, 8), generator=g)
    cls = torch.tensor(classes)[torch.randint(0, 4, (12,), generator=g)]
    ev = FewShotEvaluator(classes)
    ev.update(pred[:5], gt[:5], cls[:5])
    ev.update(pred[5:], gt[5:], cls[5:])
    m = ev.compute()
    inter, union = {c: 0 for c in classes}, {c: 0 for c in classes}
    fb_i, fb_u = [0, 0], [0, 0]
    for p, t, c in zip(pred.numpy(), gt.numpy(), cls.tolist()):
        v = t != I
        for lab in (0, 1):
            i_ = int(((p == lab) & (t == lab) & v).sum())
            u_ = int((((p == lab) | (t == lab)) & v).sum())
            fb_i[lab] += i_
            fb_u[lab] += u_
            if lab == 1:
                inter[c] += i_
                union[c] += u_
    seen = [c for c in classes if c in cls.tolist()]
    ious = {c: inter[c] / union[c] * 100 for c in seen}
    assert m["mIoU"] == pytest.approx(np.mean(list(ious.values())))
    for c in seen:
        assert m["class_IoU"][c] == pytest.approx(ious[c])
    assert m["FB-IoU"] == pytest.approx((fb_i[0] / fb_u[0] + fb_i[1] / fb_u[1]) / 2 * 100)


def test_bad_inputs_are_named():
    ev = FewShotEvaluator([3, 7])
    with pytest.raises(ValueError, match=r"episode classes \[4\] are not among class_ids \[3, 7\]"):
        ev.update(PRED, GT, [3, 4, 3])
    with pytest.raises(ValueError, match="prediction values must be 0 or 1"):
        ev.update(PRED * 2, GT, CLS)
    with pytest.raises(ValueError, match="ground-truth values must be 0, 1 or ignore_index=255"):
        ev.update(PRED, GT * 3, CLS)
    with pytest.raises(ValueError, match=r"cls \[B\]"):
        ev.update(PRED, GT, [3, 7])
    with pytest.raises(ValueError, match="distinct"):
        FewShotEvaluator([3, 3])
    assert ev.compute()["episodes"] == 0  # nothing half-added


def test_all_reduce_sums_one_tensor(monkeypatch):
    ev = FewShotEvaluator([3, 7])
    ev.all_reduce()  # not distributed: no-op
    ev.update(PRED, GT, CLS)
    before = ev.compute()
    calls = []

    def fake_all_reduce(t, op=None):
        calls.append(t)
        t *= 2  # as if a second rank had seen the same episodes

    monkeypatch.setattr(evaluation.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(evaluation.dist, "all_reduce", fake_all_reduce)
    ev.all_reduce()
    after = ev.compute()
    assert len(calls) == 1 and after["episodes"] == 6
    assert after["mIoU"] == pytest.approx(before["mIoU"])
    assert after["FB-IoU"] == pytest.approx(before["FB-IoU"])
