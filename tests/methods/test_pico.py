"""PiCoMethod: memories, ordering of loss and pushes, warm-up, strides, DDP, trainer and export."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from segproto.config import load_config
from segproto.config.schema import ContrastLossConfig
from segproto.losses import pico_contrast_loss
from segproto.methods import build_method
from segproto.methods.pico import ClassMemory, PiCoMethod
from segproto.models import build_segmentor

from .conftest import assert_export_equals_ce, assert_resume_exact, block_batch, ddp_steps, run_ddp

TINY = {"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16}
K = 5


def make_method(seed=0, **contrast) -> PiCoMethod:
    torch.manual_seed(seed)
    cfg = dict(memory=True, memory_size=64, region_memory_size=16, warmup_iters=0, max_views=2, max_samples=32,
               proj_dim=8, pixels_per_class=3)
    cfg.update(contrast)
    return PiCoMethod(build_segmentor(TINY, K), K, ContrastLossConfig(**cfg)).train()


def batch(seed=0, b=2):
    return block_batch(seed, K, b)


def naive_ring(rows, labels, k, m, d):
    """Row-by-row ring buffer (the oracle)."""
    bank, ptr, count = torch.zeros(k, m, d, dtype=torch.float64), [0] * k, [0] * k
    for r, c in zip(rows.double(), labels.tolist()):
        bank[c, ptr[c]] = r / r.norm()
        ptr[c], count[c] = (ptr[c] + 1) % m, min(count[c] + 1, m)
    return bank, ptr, count


# --- memory ---------------------------------------------------------------------------------------

def test_class_memory_matches_naive_ring_and_filled_rows():
    mem = ClassMemory(3, 4, 2)
    g = torch.Generator().manual_seed(0)
    rows, labels = torch.randn(0, 2), torch.zeros(0, dtype=torch.long)
    for n in (3, 6, 1, 9):
        r, lab = torch.randn(n, 2, generator=g), torch.randint(0, 3, (n,), generator=g)
        mem.push_(r, lab)
        rows, labels = torch.cat([rows, r]), torch.cat([labels, lab])
        bank, ptr, count = naive_ring(rows, labels, 3, 4, 2)
        torch.testing.assert_close(mem.bank.double(), bank)
        assert mem.ptr.tolist() == ptr and mem.count.tolist() == count
        filled, cls = mem.filled()
        assert filled.shape[0] == sum(count) and cls.tolist() == sum(([c] * count[c] for c in range(3)), [])


def test_only_filled_slots_are_contrast_rows():
    """Public-code bug: never-written (random) slots were used as negatives."""
    m = make_method(warmup_iters=0)
    img, gt = batch()
    m(img, gt, 1)  # fills some slots
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(2, 16, 8, generator=g), dim=2)
    sample = m.sample_anchors(emb, gt[:, ::8, ::8].flatten(1), torch.zeros(2, 16, dtype=torch.long), g)
    clean = m.contrast_loss(sample, g)
    for mem in (m.pixel_memory, m.region_memory):
        unwritten = torch.arange(mem.size) >= mem.count[:, None]
        assert unwritten.any()
        mem.bank[unwritten] = F.normalize(torch.randn(int(unwritten.sum()), 8, generator=g), dim=1)
    assert m.contrast_loss(sample, g).item() == clean.item() > 0  # garbage in unwritten slots: no effect
    rows, _ = m.pixel_memory.filled()
    assert rows.shape[0] == int(m.pixel_memory.count.sum())


def test_memory_rows_pixels_and_region_means():
    m = make_method(pixels_per_class=2)
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(2, 12, 8, generator=g), dim=2)
    labels = torch.tensor([[0, 0, 0, 1, 1, 255, 3, 3, 3, 3, 0, 1], [4, 4, 4, 4, 4, 4, 0, 255, 255, 2, 2, 2]])
    px, px_cls, reg, reg_cls = m.memory_rows(keys, labels, torch.Generator().manual_seed(1))
    # fixed shapes: a row per (image, class, draw) and per (image, class); class -1 = nothing to push
    assert px.shape == (2 * K * 2, 8) and px_cls.shape == (2 * K * 2,) and reg.shape == (2 * K, 8)
    assert reg_cls.shape == (2 * K,)
    px, px_cls = px[px_cls >= 0], px_cls[px_cls >= 0]
    reg, reg_cls = reg[reg_cls >= 0], reg_cls[reg_cls >= 0]
    want_px, want_reg, want_cls = [], [], []
    for b in range(2):
        for c in range(K):
            sel = (labels[b] == c).nonzero().squeeze(1)
            if sel.numel():
                want_px.append(min(2, sel.numel()))
                want_reg.append(keys[b, sel].mean(0))
                want_cls.append(c)
    assert reg_cls.tolist() == want_cls and 0 in reg_cls.tolist()  # class 0 pushed
    torch.testing.assert_close(F.normalize(reg, dim=1), F.normalize(torch.stack(want_reg), dim=1))
    assert px.shape[0] == sum(want_px) and 0 in px_cls.tolist()
    for row, c in zip(px, px_cls.tolist()):  # each pushed pixel is a pixel of its class
        hits = (keys.reshape(-1, 8) == row).all(1).nonzero().squeeze(1)
        assert labels.reshape(-1)[hits].tolist() == [c]


def test_memory_filled_after_forward_matches_push_of_memory_rows():
    m = make_method()
    img, gt = batch(1)
    seen = {}
    real = m.memory_rows

    def spy(keys, labels, gen):
        seen["rows"] = real(keys, labels, gen)
        return seen["rows"]

    m.memory_rows = spy
    m(img, gt, 1)
    px, px_cls, reg, reg_cls = seen["rows"]
    assert (px_cls == -1).any()  # padded (image, class) slots are skipped by the push
    bank, ptr, count = naive_ring(px[px_cls >= 0], px_cls[px_cls >= 0], K, 64, 8)
    torch.testing.assert_close(m.pixel_memory.bank.double(), bank, rtol=1e-5, atol=1e-6)
    assert m.pixel_memory.count.tolist() == count and m.pixel_memory.count[0] > 0
    assert m.region_memory.count.tolist() == torch.bincount(reg_cls[reg_cls >= 0], minlength=K).tolist()


@pytest.mark.parametrize("contrast, steps", [(dict(), 3), (dict(memory=False), 3),
                                             (dict(sampling="hardest", hard_k=8), 2)])
def test_fixed_shape_path_trains_like_the_compact_one(contrast, steps):
    """The sync-free path (padded anchors, the default off the CPU), forced on the CPU: same losses,
    gradients and memories as the compact CPU path, step after step. The padded anchor matrix has
    more rows, so its matmuls may round differently (~1e-7); the hardest-K choice amplifies that
    once a near-tie flips, so that variant is compared over its first contrast step (step 1 has an
    empty memory) and the others over three steps. One thread: with more, the two paths' blocked
    reductions can split differently and a near-tie flips within three steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare_fixed_and_compact(contrast, steps)
    finally:
        torch.set_num_threads(threads)


def _compare_fixed_and_compact(contrast, steps):
    runs = []
    for fixed in (False, True):
        m = make_method(**contrast)
        m.fixed_shape = fixed
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        outs = []
        for it in range(1, steps + 1):
            img, gt = batch(it)
            out = m(img, gt, it)
            opt.zero_grad()
            (out["loss_ce"] + out["loss_contrast"]).backward()
            opt.step()
            outs.append({k: float(v.detach()) for k, v in out.items()})
        runs.append((outs, {n: b.clone() for n, b in m.named_buffers() if "memory" in n},
                     [p.detach().clone() for p in m.parameters()]))
    (oa, ma, pa), (of, mf, pf) = runs
    for a, f in zip(oa, of):
        assert a.keys() == f.keys() and a["num_anchors"] == f["num_anchors"] > 0
        for key in a:
            assert f[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    for name in ma:
        torch.testing.assert_close(mf[name], ma[name])
    for x, y in zip(pf, pa):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("contrast", [dict(), dict(memory=False), dict(sampling="semi_hard", hard_k=8)])
def test_normalising_only_the_used_pixels_equals_normalising_the_map(contrast):
    """The method normalises only the drawn anchors (and the memory rows inside the ops); the
    reference normalises the whole embedding map first, as the projection head does by default
    (the method's normalisations are then no-ops up to rounding). Float64 model: the same losses,
    gradients and memories over three steps of training."""
    runs = []
    for full_map in (False, True):
        m = make_method(**contrast).double()
        if full_map:
            head = m.proj.forward
            m.proj.forward = lambda feats, normalize=True: head(feats, True)
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        outs = []
        for it in range(1, 4):
            img, gt = batch(it)
            out = m(img.double(), gt, it)
            opt.zero_grad()
            (out["loss_ce"] + out["loss_contrast"]).backward()
            outs.append(float(out["loss_contrast"].detach()))
            opt.step()
        runs.append((outs, {n: b.clone() for n, b in m.named_buffers() if "memory" in n},
                     [p.detach().clone() for p in m.parameters()]))
    (oa, ma, pa), (of, mf, pf) = runs
    assert oa[1] > 0 and oa == pytest.approx(of, rel=1e-10, abs=1e-12)
    for name in ma:
        torch.testing.assert_close(mf[name], ma[name], rtol=1e-10, atol=1e-12)
    for x, y in zip(pf, pa):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_loss_reads_memory_before_this_steps_push():
    m = make_method(warmup_iters=0)
    img, gt = batch(2)
    out = m(img, gt, 1)  # memory empty when the loss is computed: no positive, loss 0
    assert out["loss_contrast"].item() == 0.0 and m.pixel_memory.count.sum() > 0
    before = {n: b.clone() for n, b in m.named_buffers() if "memory" in n}
    seen = {}
    real = m.contrast_loss

    def spy(sample, gen):
        seen.update({n: b.clone() for n, b in m.named_buffers() if "memory" in n})
        seen["sample"] = sample
        return real(sample, gen)

    m.contrast_loss = spy
    out = m(img, gt, 2)
    assert all(torch.equal(before[n], seen[n]) for n in before)  # the loss saw the old memory
    assert not torch.equal(m.pixel_memory.count, before["pixel_memory.count"])  # then pushed
    s = seen["sample"]
    old = [(before[f"{p}.bank"], before[f"{p}.count"]) for p in ("pixel_memory", "region_memory")]
    crow = torch.cat([bank[torch.arange(bank.shape[1]) < cnt[:, None]] for bank, cnt in old])
    clab = torch.cat([torch.arange(K).repeat_interleave(cnt) for _, cnt in old])
    want = m.contrast_cfg.weight * pico_contrast_loss(s.feats, s.labels, crow, clab, temperature=0.1)
    assert out["loss_contrast"].item() == pytest.approx(want.item(), rel=1e-5) and out["loss_contrast"] > 0


def test_memory_loss_path_equals_masked_loss_on_filled_rows():
    """contrast_loss with memory and sampling "all" runs the per-class memory_contrast_loss: same
    value and anchor gradient as pico_contrast_loss on the copied filled rows (the previous path)."""
    m = make_method(warmup_iters=0, temperature=0.07, base_temperature=0.07)
    img, gt = batch(9)
    for it in (1, 2, 3):
        m(img, gt, it)
    g = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(2, 16, 8, generator=g), dim=2)
    sample = m.sample_anchors(emb, gt[:, ::8, ::8].flatten(1), torch.zeros(2, 16, dtype=torch.long), g)
    feats = sample.feats.clone().requires_grad_()
    got = m.contrast_loss(sample._replace(feats=feats), g)
    (g_got,) = torch.autograd.grad(got, feats)
    rows = [mem.filled() for mem in (m.pixel_memory, m.region_memory)]
    ref = feats.detach().double().requires_grad_()
    want = pico_contrast_loss(ref, sample.labels, torch.cat([r[0] for r in rows]).double(),
                              torch.cat([r[1] for r in rows]), temperature=0.07, base_temperature=0.07)
    (g_want,) = torch.autograd.grad(want, ref)
    assert got.item() == pytest.approx(want.item(), rel=1e-5) and got.item() > 0
    torch.testing.assert_close(g_got.double(), g_want, rtol=1e-4, atol=1e-6)


# --- the method -----------------------------------------------------------------------------------

@pytest.mark.parametrize("contrast", [
    dict(memory=False), dict(memory=True), dict(memory=True, sampling="semi_hard", hard_k=4, synth_neg_neg=2,
                                                 synth_neg_anchor=2)])
def test_forward_finite_and_contrast_reaches_projection_head(contrast):
    """Public-code bug: the contrast term was multiplied by 0 in single-process runs."""
    m = make_method(**contrast)
    img, gt = batch(3)
    m(img, gt, 1)
    out = m(img, gt, 2)
    assert {"loss_ce", "loss_contrast", "hard_frac", "num_anchors"} <= set(out)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in out.values())
    assert out["loss_contrast"].item() > 0
    out["loss_contrast"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.proj.parameters())
    if contrast["memory"]:
        assert 0 < out["queue_fill_min"] <= out["queue_fill"] <= 1 and 0 < out["region_fill"] <= 1


def test_warmup_gives_zero_but_fills_memory():
    m = make_method(warmup_iters=3, weight=1.0)
    img, gt = batch(4)
    for it in (1, 2, 3):
        out = m(img, gt, it)
        assert out["loss_contrast"].item() == 0.0 and out["loss_contrast"].requires_grad
    assert m.pixel_memory.count.sum() > 0
    assert m(img, gt, 4)["loss_contrast"].item() > 0


def test_labels_resized_to_the_embedding_stride():
    """Public-code bug: labels and embeddings at different strides."""
    m = make_method()
    img, gt = batch(5)
    out = m.segmentor(img)
    emb = m.proj(out["feats"])
    labels, preds = m.targets_at(out["logits"], gt, tuple(emb.shape[-2:]))
    assert labels.shape == preds.shape == (2, 4, 4) == (emb.shape[0], *emb.shape[-2:])
    assert torch.equal(labels, gt[:, ::8, ::8])
    assert torch.equal(preds, out["logits"].argmax(1))
    big = F.interpolate(out["logits"], scale_factor=2, mode="bilinear", align_corners=False)  # logits at stride 4
    assert m.targets_at(big, gt, (4, 4))[1].shape == (2, 4, 4)
    m(img, gt, 1)  # regions pushed = (image, class) pairs at the embedding's 4x4 labels
    pairs = sum(len(set(gt[b, ::8, ::8].flatten().tolist()) - {255}) for b in range(2))
    assert int(m.region_memory.count.sum()) == pairs


def test_class_zero_takes_part():
    """Public-code bug: class 0 skipped."""
    m = make_method(max_views=1)
    img, gt = batch(6)
    gt[:, :16] = 0
    seen = {}
    real = m.sample_anchors
    m.sample_anchors = lambda *a: seen.setdefault("s", real(*a))
    m(img, gt, 1)
    assert 0 in seen["s"].labels.tolist() and m.pixel_memory.count[0] > 0 and m.region_memory.count[0] == 2


def test_deployable_and_checkpoint_state():
    m = make_method()
    img, gt = batch(7)
    m(img, gt, 1)
    dep = set(m.deployable().state_dict())
    assert not any("proj" in k or "memory" in k for k in dep)
    assert dep == set(build_segmentor(TINY, K).state_dict())
    state = m.state_dict()
    assert {f"{p}.{b}" for p in ("pixel_memory", "region_memory") for b in ("bank", "ptr", "count")} <= set(state)
    fresh = make_method(seed=1)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), state.values()))
    assert torch.equal(m.eval()(img), m.segmentor.eval()(img))


def test_same_seed_and_iteration_sample_the_same():
    a, b = make_method(), make_method()
    img, gt = batch(8)
    for it in (1, 2):
        torch.manual_seed(it)  # the decoder's dropout uses the global RNG (checkpointed by the trainer)
        oa = a(img, gt, it)
        torch.manual_seed(it)
        ob = b(img, gt, it)
        assert all(torch.equal(oa[k], ob[k]) for k in oa)
    assert all(torch.equal(x, y) for x, y in zip(a.buffers(), b.buffers()))


# --- DDP ------------------------------------------------------------------------------------------

def _ddp_body(rank: int) -> dict:
    m = make_method(seed=0, memory_size=512, region_memory_size=128, warmup_iters=1)
    pushed = torch.zeros(K, dtype=torch.long)
    real = m.memory_rows

    def spy(keys, labels, gen):
        rows = real(keys, labels, gen)
        pushed.add_(torch.bincount(rows[1][rows[1] >= 0], minlength=K))
        return rows

    m.memory_rows = spy
    ddp_steps(m, batch, rank)
    return {"buffers": {n: b for n, b in m.named_buffers() if "memory" in n}, "local_pushed": pushed}


@pytest.mark.slow
def test_ddp_ranks_end_with_identical_memories(tmp_path):
    r0, r1 = run_ddp(_ddp_body, tmp_path)
    for name, buf in r0["buffers"].items():
        assert torch.equal(buf, r1["buffers"][name]), name
    # every rank pushed both ranks' rows (the public code kept rank 0's only)
    want = r0["local_pushed"] + r1["local_pushed"]
    assert r0["buffers"]["pixel_memory.count"].tolist() == want.tolist()
    assert not torch.equal(r0["local_pushed"], r1["local_pushed"])


# --- trainer and export ---------------------------------------------------------------------------

def write_tiny_cfg(path: Path, root: Path, method: str, **train) -> Path:
    from tests.engine.conftest import tiny_cfg_dict

    cfg = tiny_cfg_dict(root, **train)
    cfg["method"] = {"name": method}
    cfg["loss"] = {"contrast": {"memory": True, "memory_size": 40, "region_memory_size": 8, "warmup_iters": 1,
                                "max_samples": 32, "max_views": 2, "proj_dim": 16, "pixels_per_class": 2}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_trainer_runs_pico_and_export_equals_ce(tiny_root, tmp_path):
    from segproto.engine import Trainer, load_checkpoint

    cfg_p = write_tiny_cfg(tmp_path / "pico.yaml", tiny_root, "pico", iters=4, eval_interval=4,
                           checkpoint_interval=2, log_interval=1)
    Trainer(load_config(cfg_p), tmp_path / "pico").run()
    recs = [json.loads(ln) for ln in (tmp_path / "pico/scalars.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["mode"] == "train"]
    assert [r["loss_contrast"] for r in train][0] == 0.0 and train[-1]["loss_contrast"] > 0
    assert all({"loss_ce", "queue_fill", "queue_fill_min", "hard_frac"} <= set(r) for r in train)
    assert load_checkpoint(tmp_path / "pico/iter_4.pth")["model"]["pixel_memory.count"].sum() > 0
    cfg_c = write_tiny_cfg(tmp_path / "ce.yaml", tiny_root, "ce", iters=1, eval_interval=1, checkpoint_interval=1)
    assert_export_equals_ce(cfg_p, tmp_path / "pico/iter_4.pth", cfg_c, tmp_path)


def test_trainer_resume_restores_memories_exactly(tiny_root, tmp_path):
    want = assert_resume_exact(write_tiny_cfg(tmp_path / "pico.yaml", tiny_root, "pico", iters=4, eval_interval=4,
                                              checkpoint_interval=2), tmp_path)
    assert want["pixel_memory.count"].sum() > 0


def test_configs_load_and_build():
    repo = Path(__file__).resolve().parents[2]
    for name in ("quickstart", "cityscapes_hrnet48_40k", "cityscapes_r101_deeplabv3_40k"):
        cfg = load_config(repo / "configs/pico" / f"{name}.yaml")
        assert cfg.method.name == "pico" and cfg.loss.contrast.memory
    cfg = load_config(repo / "configs/pico/cityscapes_hrnet48_40k.yaml")
    assert (cfg.model.backbone, cfg.model.output_stride, cfg.model.arch, cfg.model.channels) == (
        "timm:hrnet_w48", None, "fcn", 720)
    assert (cfg.train.iters, cfg.data.batch_size, tuple(cfg.data.crop_size)) == (40000, 8, (512, 1024))
    quick = load_config(repo / "configs/pico/quickstart.yaml", ["data.crop_size=[32,32]"])
    assert isinstance(build_method(quick, K), PiCoMethod)
