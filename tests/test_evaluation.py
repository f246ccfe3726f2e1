"""Tests for segproto.evaluation against independent references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from segproto.evaluation import (SegEvaluator, confusion_matrix, format_table,
                                 hierarchical_metrics, map_confusion, metrics_from_confusion)

NAN = float("nan")


def random_labels(seed: int, shape, k: int, ignore_frac: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, k, shape, generator=g)
    target = torch.randint(0, k, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignore_frac] = 255
    return pred, target


def assert_list_close(actual, expected):
    np.testing.assert_allclose(np.array(actual, dtype=float), np.array(expected, dtype=float),
                               rtol=1e-12, atol=1e-12, equal_nan=True)


# --- confusion matrix ---------------------------------------------------------------------------

def test_confusion_matrix_matches_sklearn():
    k = 7
    pred, target = random_labels(0, (4, 33, 29), k)
    keep = target != 255
    expected = sk_confusion_matrix(target[keep].numpy(), pred[keep].numpy(), labels=range(k))
    cm = confusion_matrix(pred, target, k)
    assert cm.dtype == torch.int64 and cm.shape == (k, k)
    np.testing.assert_array_equal(cm.numpy(), expected)


def test_confusion_matrix_accepts_numpy_and_small_dtypes():
    pred, target = random_labels(1, (2, 8, 8), 5)
    ref = confusion_matrix(pred, target, 5)
    assert torch.equal(confusion_matrix(pred.numpy().astype(np.uint8),
                                        target.numpy().astype(np.uint8), 5), ref)


def test_confusion_matrix_rejects_float_labels():
    with pytest.raises(TypeError, match="integer label"):
        confusion_matrix(torch.zeros(3), torch.zeros(3, dtype=torch.long), 2)


def test_ignored_pixels_are_skipped_whatever_the_prediction():
    target = torch.tensor([[0, 255], [1, 255]])
    pred = torch.tensor([[0, 1], [0, 0]])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2).numpy(), [[1, 0], [1, 0]])


def test_custom_ignore_index():
    target = torch.tensor([0, -1, 1])
    pred = torch.tensor([0, 1, 1])
    np.testing.assert_array_equal(confusion_matrix(pred, target, 2, ignore_index=-1).numpy(),
                                  [[1, 0], [0, 1]])


def test_target_out_of_range_names_value():
    with pytest.raises(ValueError, match="target value 7 outside"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 5)
    with pytest.raises(ValueError, match="target value -2 outside"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([-2, 0]), 5)


def test_pred_out_of_range_names_value():
    with pytest.raises(ValueError, match="prediction value 5 outside"):
        confusion_matrix(torch.tensor([0, 5]), torch.tensor([0, 1]), 5)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long),
                         torch.zeros(3, 2, dtype=torch.long), 2)


# --- metrics ------------------------------------------------------------------------------------

# Ten pixels, written out by hand:
#   GT   = 0 0 0 0 1 1 1 1 2 2
#   pred = 0 0 0 1 1 1 2 2 0 2
# cm (rows GT) = [[3,1,0],[0,2,2],[1,0,1]]
# class 0: TP 3, GT 4, pred 4 -> union 5 -> IoU 60,   Acc 75
# class 1: TP 2, GT 4, pred 3 -> union 5 -> IoU 40,   Acc 50
# class 2: TP 1, GT 2, pred 3 -> union 4 -> IoU 25,   Acc 50
# aAcc 6/10 = 60; mIoU 125/3 = 41.666..; mAcc 175/3 = 58.333..
HAND_GT = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
HAND_PRED = [0, 0, 0, 1, 1, 1, 2, 2, 0, 2]


def test_hand_computed_three_class_table():
    cm = confusion_matrix(torch.tensor(HAND_PRED), torch.tensor(HAND_GT), 3)
    np.testing.assert_array_equal(cm.numpy(), [[3, 1, 0], [0, 2, 2], [1, 0, 1]])
    m = metrics_from_confusion(cm, ["a", "b", "c"])
    assert_list_close(m["IoU"], [60.0, 40.0, 25.0])
    assert_list_close(m["Acc"], [75.0, 50.0, 50.0])
    assert m["aAcc"] == pytest.approx(60.0)
    assert m["mIoU"] == pytest.approx(125 / 3)
    assert m["mAcc"] == pytest.approx(175 / 3)
    assert m["classes"] == ["a", "b", "c"]
    assert all(type(m[k]) is float for k in ("aAcc", "mIoU", "mAcc"))


def test_nan_semantics_absent_and_predicted_only_classes():
    # class 2 is predicted but never in GT; class 3 appears nowhere.
    # cm = [[1,0,1,0],[0,2,0,0],[0]*4,[0]*4]
    cm = confusion_matrix(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1]), 4)
    m = metrics_from_confusion(cm)
    assert_list_close(m["IoU"], [50.0, 100.0, 0.0, NAN])  # predicted-only -> 0, absent -> NaN
    assert_list_close(m["Acc"], [50.0, 100.0, NAN, NAN])  # no GT -> NaN
    assert m["mIoU"] == pytest.approx(50.0)  # (50 + 100 + 0) / 3
    assert m["mAcc"] == pytest.approx(75.0)
    assert m["aAcc"] == pytest.approx(75.0)


def test_empty_confusion_is_all_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = metrics_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert all(math.isnan(m[k]) for k in ("aAcc", "mIoU", "mAcc"))
    assert all(math.isnan(v) for v in m["IoU"] + m["Acc"])


def test_metrics_match_per_class_mask_reference():
    """Per-class IoU/Acc from boolean masks on the pixels, not from the confusion matrix."""
    k = 6
    pred, target = random_labels(2, (3, 40, 40), k)
    pred[pred == 5] = 0  # class 5 never predicted
    keep = target != 255
    p, t = pred[keep].numpy(), target[keep].numpy()
    iou, acc = [], []
    for c in range(k):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        iou.append(100 * inter / union if union else NAN)
        acc.append(100 * inter / np.sum(t == c) if np.sum(t == c) else NAN)
    m = metrics_from_confusion(confusion_matrix(pred, target, k))
    assert_list_close(m["IoU"], iou)
    assert_list_close(m["Acc"], acc)
    assert m["aAcc"] == pytest.approx(100 * np.mean(p == t))
    assert m["mIoU"] == pytest.approx(np.nanmean(iou))


def test_metrics_checks_names_and_shape():
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        metrics_from_confusion(torch.zeros(3, 3, dtype=torch.int64), ["a", "b"])
    with pytest.raises(ValueError, match=r"\[K, K\]"):
        metrics_from_confusion(torch.zeros(3, 2))


# --- taxonomy levels ----------------------------------------------------------------------------

PARENT = np.array([0, 0, 1, 1, 1, 2])  # 6 fine classes -> 3 coarse


def test_map_confusion_equals_relabel_then_recount():
    pred, target = random_labels(3, (2, 50, 50), 6)
    fine = confusion_matrix(pred, target, 6)
    pm = torch.as_tensor(PARENT)
    relabelled_target = torch.where(target == 255, target, pm[target.clamp(max=5)])
    brute = confusion_matrix(pm[pred], relabelled_target, 3)
    coarse = map_confusion(fine, PARENT)
    assert coarse.dtype == torch.int64 and torch.equal(coarse, brute)
    a = np.eye(3, dtype=np.int64)[PARENT]  # [6, 3] assignment matrix
    np.testing.assert_array_equal(coarse.numpy(), a.T @ fine.numpy() @ a)


def test_map_confusion_num_coarse_and_errors():
    cm = torch.eye(3, dtype=torch.int64)
    assert map_confusion(cm, [0, 0, 1], num_coarse=4).shape == (4, 4)
    with pytest.raises(ValueError, match="parent_map has shape"):
        map_confusion(cm, [0, 1])
    with pytest.raises(ValueError, match="must lie in"):
        map_confusion(cm, [0, 1, 2], num_coarse=2)


def test_hierarchical_metrics():
    pred, target = random_labels(4, (2, 30, 30), 6)
    fine = confusion_matrix(pred, target, 6)
    out = hierarchical_metrics(fine, {"level0": np.arange(6), "level1": PARENT,
                                      "root": np.zeros(6, dtype=int)},
                               class_names={"level1": ["x", "y", "z"]})
    assert out["level0"] == metrics_from_confusion(fine)
    pm = torch.as_tensor(PARENT)
    relabelled = torch.where(target == 255, target, pm[target.clamp(max=5)])
    expected = metrics_from_confusion(confusion_matrix(pm[pred], relabelled, 3), ["x", "y", "z"])
    assert out["level1"] == expected
    assert out["root"]["mIoU"] == pytest.approx(100.0)


# --- evaluator ----------------------------------------------------------------------------------

def test_evaluator_accumulation_equals_one_shot():
    k = 5
    pred, target = random_labels(5, (6, 17, 19), k)
    ev = SegEvaluator(k)
    for i in range(0, 6, 2):
        ev.update(pred[i:i + 2], target[i:i + 2])
    assert torch.equal(ev.confusion, confusion_matrix(pred, target, k))
    assert ev.compute() == metrics_from_confusion(confusion_matrix(pred, target, k))
    ev.reset()
    assert int(ev.confusion.sum()) == 0


def test_evaluator_logits_take_argmax():
    k = 4
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, k, 9, 11, generator=g)
    target = torch.randint(0, k, (3, 9, 11), generator=g)
    a, b = SegEvaluator(k), SegEvaluator(k)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.confusion, b.confusion)
    with pytest.raises(ValueError, match="channels"):
        a.update(torch.randn(3, k + 1, 9, 11), target)


def test_evaluator_all_reduce_is_noop_without_process_group():
    ev = SegEvaluator(3)
    ev.update(torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 1, 1]]]))
    before = ev.confusion.clone()
    ev.all_reduce()
    assert torch.equal(ev.confusion, before)


def _ddp_worker(rank: int, world: int, init_file: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    pred, target = random_labels(10 + rank, (2, 8, 8), 3)
    ev = SegEvaluator(3)
    ev.update(pred, target)
    ev.all_reduce()
    queue.put((rank, ev.confusion.tolist()))  # plain data: no shared-memory handles
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes (~8 s on 2 CPU cores)
def test_evaluator_all_reduce_sums_over_ranks(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "pg"), queue), nprocs=2,
                       start_method="spawn")
    results = dict(queue.get() for _ in range(2))
    expected = sum(confusion_matrix(*random_labels(10 + r, (2, 8, 8), 3), 3) for r in range(2))
    assert results[0] == expected.tolist() and results[1] == expected.tolist()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    pred, target = random_labels(7, (2, 64, 64), 19)
    cpu = confusion_matrix(pred, target, 19)
    ev = SegEvaluator(19, device="cuda")
    ev.update(pred.cuda(), target.cuda())
    assert torch.equal(ev.confusion.cpu(), cpu)


# --- table --------------------------------------------------------------------------------------

def test_format_table():
    cm = confusion_matrix(torch.tensor(HAND_PRED + [0]), torch.tensor(HAND_GT + [0]), 4)
    m = metrics_from_confusion(cm, ["road", "sky", "person", "bicycle"])
    lines = format_table(m, m["classes"]).splitlines()
    assert lines[0].split() == ["Class", "IoU", "Acc"]
    assert lines[1].split() == ["road", f"{100 * 4 / 6:.2f}", "80.00"]
    assert lines[4].split() == ["bicycle", "nan", "nan"]
    assert lines[-1] == f"aAcc: {700 / 11:.2f}  mIoU: {m['mIoU']:.2f}  mAcc: {m['mAcc']:.2f}"
    assert format_table(m) == format_table(m, m["classes"])
    with pytest.raises(ValueError):
        format_table(m, ["a"])
