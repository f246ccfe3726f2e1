"""The semi-supervised framework: EMA teacher, pseudo-label CE, strong views, trainer streams."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from segproto.config import load_config
from segproto.config.schema import SemiConfig
from segproto.data.batch_aug import class_mix, photometric
from segproto.methods.semi import EMATeacher, MeanTeacherMethod, pseudo_label_loss
from segproto.models import build_segmentor

from .conftest import assert_export_equals_ce, assert_resume_exact, block_batch

TINY = {"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16}
K = 5
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def test_ema_decay_schedule_and_update_match_the_formula():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    teacher = EMATeacher(student, ema_decay=0.99)
    decays = []
    for _ in range(4):
        before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        student(torch.randn(2, 3, 4, 4))  # moves the BN statistics and num_batches_tracked
        d = teacher.decay()
        decays.append(d)
        teacher.update_(student)
        for k, t in teacher.model.state_dict().items():
            s = student.state_dict()[k]
            want = s if not t.is_floating_point() else d * before[k] + (1 - d) * s
            torch.testing.assert_close(t, want, rtol=0, atol=1e-6)
    assert decays == [0.0, 0.5, pytest.approx(2 / 3), 0.75]  # min(1 - 1/(step+1), 0.99)
    teacher.step.fill_(10_000)
    assert teacher.decay() == 0.99
    assert not any(p.requires_grad for p in teacher.parameters())


def test_pseudo_label_loss_matches_a_loop_oracle():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, K, 3, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (2, 3, 4), generator=g)
    labels[0, 0, 0] = 255
    conf = torch.rand(2, 3, 4, generator=g, dtype=torch.float64)
    conf[1] = 0.99  # image 1: every pixel confident
    got, mean_w = pseudo_label_loss(logits, labels, conf, strong_threshold=0.6)
    total, n, weights = 0.0, 0, []
    for b in range(2):
        w = sum(1 for i in range(3) for j in range(4) if conf[b, i, j] >= 0.6 and labels[b, i, j] != 255) / 12
        weights.append(w)
        for i in range(3):
            for j in range(4):
                y = int(labels[b, i, j])
                if y == 255:
                    continue
                z = logits[b, :, i, j]
                total += w * (math.log(sum(math.exp(float(v)) for v in z)) - float(z[y]))
                n += 1
    assert got.item() == pytest.approx(total / n, rel=1e-6)  # computed in float32, as in training
    assert weights[1] == 1.0 and mean_w.item() == pytest.approx(sum(weights) / 2)


def test_class_mix_pastes_half_of_the_partners_classes():
    g = torch.Generator().manual_seed(2)
    img = torch.randn(4, 3, 8, 8, generator=g)
    labels = torch.randint(0, K, (4, 8, 8), generator=g)
    labels[1, :2] = 255
    conf = torch.rand(4, 8, 8, generator=g)
    mixed, mlab, (mconf,), mask = class_mix(img, labels, [conf], torch.Generator().manual_seed(3))
    for b in range(4):
        p = (b - 1) % 4  # the partner
        src = labels[p]
        present = sorted(set(src.unique().tolist()) - {255})
        pasted = sorted(set(src[mask[b]].unique().tolist()))
        assert len(pasted) == (len(present) + 1) // 2 and 255 not in pasted
        whole = torch.isin(src, torch.tensor(pasted))
        assert torch.equal(mask[b], whole)  # whole classes, nothing else
        assert torch.equal(mixed[b][:, mask[b]], img[p][:, mask[b]])
        assert torch.equal(mixed[b][:, ~mask[b]], img[b][:, ~mask[b]])
        assert torch.equal(mlab[b], torch.where(mask[b], src, labels[b]))
        assert torch.equal(mconf[b], torch.where(mask[b], conf[p], conf[b]))
    again = class_mix(img, labels, [conf], torch.Generator().manual_seed(3))
    assert torch.equal(again[3], mask)


def test_photometric_is_seeded_and_identity_when_off():
    g = torch.Generator().manual_seed(4)
    img = (torch.rand(3, 3, 16, 16, generator=g) * 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    a = photometric(img, MEAN, STD, torch.Generator().manual_seed(5))
    b = photometric(img, MEAN, STD, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, img)
    off = photometric(img, MEAN, STD, torch.Generator().manual_seed(5), jitter_p=0.0, blur_p=0.0)
    torch.testing.assert_close(off, img, rtol=0, atol=1e-5)


def make_method(**semi) -> MeanTeacherMethod:
    torch.manual_seed(0)
    return MeanTeacherMethod(build_segmentor(TINY, K), K, SemiConfig(**semi), MEAN, STD).train()


def batch(seed=0, b=2):
    return block_batch(seed, K, b, ignore_corner=False)


def test_mean_teacher_step_trains_the_student_only_and_updates_the_teacher():
    m = make_method(strong_threshold=0.0)  # every image weighted 1
    img, gt = batch()
    img_u, _ = batch(1)
    out = m(img, gt, 1, unlabeled=img_u)
    assert {"loss_ce", "loss_unsup", "unsup_weight", "confident"} <= set(out)
    assert out["unsup_weight"].item() == 1.0 and out["loss_unsup"].item() > 0
    (out["loss_ce"] + out["loss_unsup"]).backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert any(p.grad is not None for p in m.segmentor.parameters())
    with torch.no_grad():
        for p in m.segmentor.parameters():
            p.add_(1.0)
    m.after_step(1)  # decay 0 at step 0: the teacher becomes the student
    assert all(torch.equal(a, b) for a, b in zip(m.teacher.model.parameters(), m.segmentor.parameters()))
    with pytest.raises(ValueError, match="data.unlabeled_split"):
        m(img, gt, 2)
    assert m.deployable() is m.teacher.model
    assert make_method(eval_teacher=False).deployable() is not None


# --- trainer ----------------------------------------------------------------------------------------

def write_cfg(path: Path, root: Path, method: str = "mean_teacher", unlabeled="train_unlabeled_1-2", **train) -> Path:
    from tests.engine.conftest import tiny_cfg_dict

    cfg = tiny_cfg_dict(root, **train)
    cfg["method"] = {"name": method}
    cfg["data"].update(train_split="train_labeled_1-2", unlabeled_split=unlabeled)
    cfg["semi"] = {"strong_threshold": 0.0}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_trainer_semi_streams_resume_exactly_and_export_the_teacher(tiny_root, tmp_path):
    cfg_path = write_cfg(tmp_path / "mt.yaml", tiny_root, iters=4, eval_interval=4, checkpoint_interval=2,
                         log_interval=1)
    want = assert_resume_exact(cfg_path, tmp_path)
    recs = [json.loads(ln) for ln in (tmp_path / "full/scalars.jsonl").read_text().splitlines()]
    assert all(r["loss_unsup"] > 0 for r in recs if r["mode"] == "train")
    assert int(want["teacher.step"]) == 4
    ce = write_cfg(tmp_path / "ce.yaml", tiny_root, method="ce", unlabeled=None, iters=1, eval_interval=1,
                   checkpoint_interval=1)
    assert_export_equals_ce(cfg_path, tmp_path / "full/iter_4.pth", ce, tmp_path, deployed_prefix="teacher.model.")


def test_streams_must_match_the_method(tiny_root, tmp_path):
    from segproto.engine import Trainer

    with pytest.raises(ValueError, match="semi-supervised: set data.unlabeled_split"):
        Trainer(load_config(write_cfg(tmp_path / "a.yaml", tiny_root, unlabeled=None)), tmp_path / "a")
    with pytest.raises(ValueError, match="does not use unlabelled images"):
        Trainer(load_config(write_cfg(tmp_path / "b.yaml", tiny_root, method="ce")), tmp_path / "b")


def test_semi_configs_load():
    repo = Path(__file__).resolve().parents[2]
    sup = load_config(repo / "configs/prcl/supervised_1-8.yaml")
    mt = load_config(repo / "configs/prcl/mean_teacher_1-8.yaml")
    assert sup.data.train_split == mt.data.train_split == "train_labeled_1-8" and sup.data.unlabeled_split is None
    assert mt.data.unlabeled_split == "train_unlabeled_1-8" and mt.method.name == "mean_teacher"
    prcl = load_config(repo / "configs/prcl/quickstart.yaml")
    assert prcl.method.name == "prcl" and prcl.data.unlabeled_split == "train_unlabeled_1-8"
    assert sup.train.iters == mt.train.iters == prcl.train.iters  # equal budget
    for name, split in (("cityscapes_r101_1-16", "train_unlabeled_1-16"), ("voc_r101_1464", "train_unlabeled_1464")):
        paper = load_config(repo / f"configs/prcl/{name}.yaml")
        assert paper.method.name == "prcl" and paper.data.unlabeled_split == split
        assert (paper.model.backbone, paper.loss.prcl.temperature, paper.optim.lr) == ("resnet101", 100.0, 3.2e-3)


# --- PRCL ---------------------------------------------------------------------------------------------

def make_prcl(total=100, **prcl):
    from segproto.config.schema import PRCLLossConfig
    from segproto.methods.semi import PRCLMethod

    torch.manual_seed(0)
    cfg = dict(proj_dim=8, num_anchors=4, num_negatives=6)
    cfg.update(prcl)
    return PRCLMethod(build_segmentor(TINY, K), K, SemiConfig(weak_threshold=0.0), PRCLLossConfig(**cfg),
                      total_iters=total, mean=MEAN, std=STD).train()


def test_prcl_ramp_is_the_public_ramp_down():
    m = make_prcl(total=100, weight=2.0)
    assert m.contrast_weight(0) == 2.0
    assert m.contrast_weight(50) == pytest.approx(2.0 * math.exp(-1.25))
    assert m.contrast_weight(100) == pytest.approx(2.0 * math.exp(-5.0))
    assert make_prcl(ramp=False, weight=0.5).contrast_weight(100) == 0.5


def test_prcl_step_fills_the_gdp_and_trains_both_heads():
    m = make_prcl()
    img, gt = batch()
    img_u, _ = batch(1)
    out = m(img, gt, 1, unlabeled=img_u)
    assert {"loss_ce", "loss_unsup", "loss_contrast", "mean_var", "gdp_set"} <= set(out)
    assert torch.isfinite(out["loss_contrast"]) and out["loss_contrast"].item() > 0
    assert (m.gdp_prec > 0).any(1).all()  # every class of the labelled batch (and pseudo-labels)
    sum(v for k, v in out.items() if k.startswith("loss")).backward()
    for head in (m.proj, m.var_head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert 1e-4 <= out["mean_var"].item() < 1


def test_prcl_gdp_accumulates_precision_sums_over_steps():
    """Oracle: after two steps, prec_g[c] = sum over both batches of 1/var of the class-c pixels."""
    m = make_prcl(weight=0.0)  # the loss off: only the buffers move
    seen = []
    real = m.contrast_targets

    def spy(*a, **k):
        labels, probs = real(*a, **k)
        seen.append(labels)
        return labels, probs

    m.contrast_targets = spy
    variances = []
    real_var = m.var_head.forward
    m.var_head.forward = lambda f: variances.append(real_var(f)) or variances[-1]
    for it, seed in ((1, 0), (2, 5)):
        img, gt = batch(seed)
        m(img, gt, it, unlabeled=batch(seed + 1)[0])
    want = torch.zeros(K, 8, dtype=torch.float64)
    for labels, var in zip(seen, variances):
        v = var.detach().permute(0, 2, 3, 1).reshape(-1, 8).double()
        for i, c in enumerate(labels.tolist()):
            if c != 255:
                want[c] += 1.0 / v[i]
    torch.testing.assert_close(m.gdp_prec.double(), want, rtol=1e-5, atol=1e-3)


def test_prcl_contrast_targets_mask_unconfident_pseudo_labels():
    m = make_prcl()
    m.semi.weak_threshold = 0.7
    logits = torch.randn(4, K, 4, 4)
    gt = torch.randint(0, K, (2, 32, 32))
    pseudo = torch.randint(0, K, (2, 32, 32))
    conf = torch.rand(2, 32, 32)
    labels, probs = m.contrast_targets(logits, gt, pseudo, conf, (4, 4))
    lab = labels.view(4, 4, 4)
    want_u = torch.where(conf >= 0.7, pseudo, 255)[:, ::8, ::8]  # nearest at stride 8
    assert torch.equal(lab[2:], want_u) and torch.equal(lab[:2], gt[:, ::8, ::8])
    p = torch.softmax(logits, 1)
    b, i, j = 3, 1, 2
    if int(lab[b, i, j]) != 255:
        assert probs.view(4, 4, 4)[b, i, j].item() == pytest.approx(p[b, int(lab[b, i, j]), i, j].item())


def test_trainer_prcl_resumes_exactly(tiny_root, tmp_path):
    path = write_cfg(tmp_path / "p.yaml", tiny_root, method="prcl", iters=4, eval_interval=4, checkpoint_interval=2)
    raw = yaml.safe_load(path.read_text())
    raw["loss"] = {"prcl": {"proj_dim": 8, "num_anchors": 4, "num_negatives": 6}}
    path.write_text(yaml.safe_dump(raw))
    assert (assert_resume_exact(path, tmp_path)["gdp_prec"] > 0).any()
