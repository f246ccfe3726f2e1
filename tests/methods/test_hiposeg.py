"""HiPoSegMethod: schedule, prototype updates, levels, DDP, trainer, export and configs."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from segproto.config import load_config
from segproto.config.schema import HiPoSegLossConfig
from segproto.data.taxonomy import Taxonomy
from segproto.methods import build_method
from segproto.methods.hiposeg import HiPoSegMethod, stage_starts
from segproto.models import build_segmentor

from .conftest import assert_export_equals_ce, assert_resume_exact, block_batch, ddp_steps, run_ddp

TINY = {"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16}
K = 5
PARENT = [0, 0, 1, 1, 1]  # fine -> coarse
MIDDLE = [0, 1, 1, 2, 2]  # fine -> middle (3-level taxonomy), middle -> coarse [0, 1, 1]


def taxonomy(levels: int = 2) -> Taxonomy:
    fine = [{"id": i, "name": f"f{i}", "parent": (PARENT if levels == 2 else MIDDLE)[i]} for i in range(K)]
    coarse = {"name": "coarse", "classes": [{"id": 0, "name": "c0"}, {"id": 1, "name": "c1"}]}
    if levels == 2:
        return Taxonomy.from_dict({"levels": [{"name": "fine", "classes": fine}, coarse]})
    middle = [{"id": i, "name": f"m{i}", "parent": p} for i, p in enumerate([0, 1, 1])]
    return Taxonomy.from_dict({"levels": [{"name": "fine", "classes": fine}, {"name": "middle", "classes": middle},
                                          coarse]})


def make_method(levels: int = 2, total: int = 100, seed: int = 0, **cfg) -> HiPoSegMethod:
    torch.manual_seed(seed)
    c = HiPoSegLossConfig(proj_dim=8, **cfg)
    return HiPoSegMethod(build_segmentor(TINY, K), taxonomy(levels), c, total_iters=total).train()


def batch(seed=0, b=2):
    return block_batch(seed, K, b)


def test_stage_starts_are_the_paper_fractions():
    c = HiPoSegLossConfig()
    assert stage_starts(c, 2, 1000) == ([225, 75], 375)  # [fine, coarse], alignment
    assert stage_starts(c, 3, 1000) == ([225, 150, 75], 375)  # the middle level between them
    assert stage_starts(HiPoSegLossConfig(coarse_start=0.0, fine_start=0.5, align_start=1.0), 2, 40) == ([20, 0], 40)


def test_terms_switch_on_by_stage_and_stay_exactly_zero_before():
    m = make_method(total=100)  # fine after 22, coarse after 7, alignment after 37
    img, gt = batch()
    names = ["loss_pix_fine", "loss_proto_fine", "loss_pix_coarse", "loss_proto_coarse", "loss_align"]
    on = {}
    for it in (1, 8, 23, 38):
        out = m(img, gt, it)
        assert set(names) <= set(out)
        on[it] = [name for name in names if out[name].item() != 0.0]
        assert out["stage"].item() == {1: 0, 8: 1, 23: 2, 38: 3}[it]
    assert on[1] == []
    assert on[8] == ["loss_pix_coarse", "loss_proto_coarse"]
    assert on[23] == names[:4] and on[38] == names


def test_zero_weight_switches_terms_off():
    m = make_method(total=10, weight_fine=0.0, weight_align=0.0)
    out = m(*batch(), it=10)
    assert out["loss_pix_fine"].item() == out["loss_proto_fine"].item() == out["loss_align"].item() == 0.0
    assert out["loss_pix_coarse"].item() > 0 and out["stage"].item() == 1


def test_gradient_reaches_projection_head_and_not_the_buffers():
    m = make_method(total=10)
    out = m(*batch(), it=10)
    sum(v for k, v in out.items() if k.startswith("loss_") and k != "loss_ce").backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.proj.parameters())
    assert all(not b.requires_grad for b in m.prototypes.buffers())


def oracle_update(protos, feats, labels, preds, m, correct_only=True):
    """Loop oracle of the buffer update (float64): correct pixels only, unset rows take the mean."""
    out = protos.clone()
    for c in range(protos.shape[0]):
        rows = [F.normalize(feats[i], dim=0) for i in range(len(labels))
                if labels[i] == c and (preds[i] == c or not correct_only)]
        if not rows:
            continue
        mean = sum(rows) / len(rows)
        mu = mean / mean.norm()
        if (protos[c] == 0).all():
            out[c] = mu
        else:
            v = m * protos[c] + (1 - m) * mu
            out[c] = v / v.norm()
    return out


@pytest.mark.parametrize("update_from", ["correct", "all"])
def test_buffers_update_from_correct_pixels_at_every_level(update_from):
    m = make_method(levels=3, update_from=update_from).double()
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(40, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (40,), generator=g)
    labels[:4] = 255
    preds = torch.where(torch.rand(40, generator=g) < 0.5, labels.clamp(0, K - 1), torch.randint(0, K, (40,), generator=g))
    m.prototypes[0].protos[1] = F.normalize(torch.ones(8, dtype=torch.float64), dim=0)  # one row already set
    before = [b.protos.clone() for b in m.prototypes]
    lab_levels = [m._map(labels, i) for i in range(3)]
    pred_levels = [m._map(preds, i) for i in range(3)]
    m.update_prototypes(feats, lab_levels, pred_levels)
    for i in range(3):
        want = oracle_update(before[i], feats, lab_levels[i], pred_levels[i], 0.9, update_from == "correct")
        torch.testing.assert_close(m.prototypes[i].protos, want, rtol=1e-12, atol=1e-12)
    # a coarse prediction can be right while the fine one is wrong (mapped upward first)
    assert m._map(torch.tensor([0, 1, 255]), 2).tolist() == [0, 1, 255]


def test_three_level_taxonomy_aligns_each_adjacent_pair():
    m = make_method(levels=3, total=10)
    assert [b.protos.shape[0] for b in m.prototypes] == [5, 3, 2]
    assert m.parent_1.tolist() == [0, 1, 1] and m.to_level_2.tolist() == [0, 1, 1, 1, 1]
    out = m(*batch(), it=10)
    assert {"loss_pix_middle", "loss_proto_middle", "loss_align"} <= set(out) and out["stage"].item() == 4
    assert out["loss_align"].item() > 0


def test_labels_resized_to_the_embedding_stride_and_class_zero_counts():
    m = make_method(total=10, update_from="all")
    img, gt = batch()
    gt[:] = 0
    gt[:, :8, :8] = 255
    m(img, gt, 1)
    assert m.prototypes[0].initialised().tolist() == [True, False, False, False, False]
    assert m.prototypes[1].initialised().tolist() == [True, False]


def test_bad_taxonomies_are_named():
    one = Taxonomy.from_dict({"levels": [{"name": "only", "classes": [{"id": 0, "name": "a"}]}]}, source="one.yaml")
    with pytest.raises(ValueError, match="level above the trained one; one.yaml"):
        HiPoSegMethod(build_segmentor(TINY, 1), one)
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/hiposeg/quickstart.yaml")
    with pytest.raises(ValueError, match="data.taxonomy"):
        build_method(cfg, K, None)
    with pytest.raises(ValueError, match="level 1 has 3 classes but the dataset has 5"):
        cfg.data.level = 1
        build_method(cfg, K, taxonomy(3))


def test_deployable_and_checkpoint_state():
    m = make_method(total=10)
    m(*batch(), it=10)
    state = m.state_dict()
    assert {"prototypes.0.protos", "prototypes.1.protos"} <= set(state)
    assert not any(k.startswith(("to_level", "parent_")) for k in state)  # derived from the taxonomy
    fresh = make_method(total=10, seed=1)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.prototypes[0].protos, m.prototypes[0].protos)
    assert set(m.deployable().state_dict()) == {k[len("segmentor."):] for k in state if k.startswith("segmentor.")}


# --- DDP -------------------------------------------------------------------------------------------

def _ddp_body(rank: int) -> dict:
    m = make_method(total=4, update_from="all")
    seen = []
    ddp_steps(m, lambda seed: seen.append(batch(seed)) or seen[-1], rank)
    return {"protos": [b.protos for b in m.prototypes], "gt": torch.stack([gt for _, gt in seen])}


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_prototypes(tmp_path):
    r0, r1 = run_ddp(_ddp_body, tmp_path)
    assert not torch.equal(r0["gt"], r1["gt"])
    for a, b in zip(r0["protos"], r1["protos"]):
        assert torch.equal(a, b)
    # classes seen only on the other rank are set on both (the update is all-reduced)
    seen0 = set(r0["gt"].unique().tolist()) - {255}
    seen1 = set(r1["gt"].unique().tolist()) - {255}
    assert (r0["protos"][0] != 0).any(1).sum().item() == len(seen0 | seen1)


# --- trainer, export, configs ------------------------------------------------------------------------

def write_tiny_cfg(path: Path, root: Path, method: str, **train) -> Path:
    from tests.engine.conftest import tiny_cfg_dict

    cfg = tiny_cfg_dict(root, **train)
    cfg["method"] = {"name": method}
    cfg["loss"] = {"hiposeg": {"proj_dim": 16, "coarse_start": 0.0, "fine_start": 0.25, "align_start": 0.5}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_trainer_runs_hiposeg_logs_stages_and_export_equals_ce(tiny_root, tmp_path, capsys):
    from segproto.engine import Trainer, load_checkpoint

    cfg_h = write_tiny_cfg(tmp_path / "h.yaml", tiny_root, "hiposeg", iters=4, eval_interval=4,
                           checkpoint_interval=2, log_interval=1)
    metrics = Trainer(load_config(cfg_h), tmp_path / "h").run()
    assert set(metrics["levels"]) == {"fine", "coarse"}
    log = capsys.readouterr().out
    assert "hiposeg: iteration 1: coarse terms on" in log and "iteration 2: fine terms on" in log
    assert "iteration 3: alignment on" in log
    recs = [json.loads(ln) for ln in (tmp_path / "h/scalars.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["mode"] == "train"]
    assert [r["stage"] for r in train] == [1, 2, 3, 3]
    assert train[0]["loss_pix_fine"] == 0.0 and train[-1]["loss_pix_fine"] > 0 and train[-1]["loss_align"] >= 0
    val = [r for r in recs if r["mode"] == "val"]
    assert {"mIoU_fine", "mIoU_coarse"} <= set(val[-1])
    saved = json.loads((tmp_path / "h/metrics.json").read_text())
    assert saved["levels"]["coarse"]["mIoU"] == pytest.approx(metrics["levels"]["coarse"]["mIoU"])
    assert (load_checkpoint(tmp_path / "h/iter_4.pth")["model"]["prototypes.1.protos"] != 0).any()
    cfg_c = write_tiny_cfg(tmp_path / "ce.yaml", tiny_root, "ce", iters=1, eval_interval=1, checkpoint_interval=1)
    assert_export_equals_ce(cfg_h, tmp_path / "h/iter_4.pth", cfg_c, tmp_path)


def test_trainer_resume_restores_prototypes_exactly(tiny_root, tmp_path):
    want = assert_resume_exact(write_tiny_cfg(tmp_path / "h.yaml", tiny_root, "hiposeg", iters=4, eval_interval=4,
                                              checkpoint_interval=2), tmp_path)
    assert (want["prototypes.0.protos"] != 0).any()


def test_configs_load_and_build():
    repo = Path(__file__).resolve().parents[2]
    quick = load_config(repo / "configs/hiposeg/quickstart.yaml", ["data.crop_size=[32,32]"])
    assert quick.method.name == "hiposeg" and quick.loss.hiposeg.momentum == 0.9
    tax = Taxonomy.from_dict({"levels": [{"name": "fine", "classes": [
        {"id": i, "name": f"f{i}", "parent": PARENT[i]} for i in range(K)]},
        {"name": "coarse", "classes": [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]}]})
    assert isinstance(build_method(quick, K, tax), HiPoSegMethod)
    city = load_config(repo / "configs/hiposeg/cityscapes_r101_deeplabv3plus_80k.yaml")
    assert (city.model.arch, city.model.backbone, city.data.taxonomy) == (
        "deeplabv3plus", "resnet101", "builtin:cityscapes")
