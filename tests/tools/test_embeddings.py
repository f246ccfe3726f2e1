"""python -m segproto.tools.embeddings: seeded per-class sampling, the picture + JSON, and its errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segproto.tools.embeddings import keep_per_class, main, pixel_embeddings

PER_CLASS = 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One OpenMP/BLAS thread: with the cores shared (background jobs), spinning OpenMP threads
    slow scikit-learn's Barnes-Hut t-SNE by 10x or more."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def test_keep_per_class_matches_a_naive_top_k():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (200,), generator=g)
    labels[labels == 4] = 5  # a missing class in the middle
    prio = torch.rand(200, generator=g)
    idx = keep_per_class(labels, prio, 7)
    want = []
    for c in range(6):
        members = (labels == c).nonzero().squeeze(1).tolist()
        want += sorted(members, key=lambda i: -prio[i].item())[:7]
    assert idx.tolist() == want
    assert keep_per_class(labels[:0], prio[:0], 7).numel() == 0


def test_embeddings_are_unit_norm_projection_or_decoder_features():
    from segproto.config.schema import ContrastLossConfig
    from segproto.methods.base import CEMethod
    from segproto.methods.pico import PiCoMethod
    from segproto.models import build_segmentor

    tiny = {"arch": "fcn", "backbone": "resnet18", "output_stride": 8, "channels": 16}
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ce = CEMethod(build_segmentor(tiny, 5), 5).eval()
    pico = PiCoMethod(build_segmentor(tiny, 5), 5, ContrastLossConfig(proj_dim=8)).eval()
    with torch.no_grad():
        e_ce, e_pico = pixel_embeddings(ce, x), pixel_embeddings(pico, x)
    assert e_ce.shape == (2, 16, 4, 4) and e_pico.shape == (2, 8, 4, 4)
    for e in (e_ce, e_pico):
        torch.testing.assert_close(e.norm(dim=1), torch.ones(2, 4, 4))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A PiCo model trained 2 iterations on a 32-px synthetic dataset: (config, checkpoint)."""
    from segproto.config import load_config
    from segproto.data import generate_synthetic
    from segproto.engine import Trainer
    from tests.engine.conftest import tiny_cfg_dict

    tmp = tmp_path_factory.mktemp("embeddings")
    generate_synthetic(tmp / "data", num_train=16, num_val=6, num_test=6, image_size=32, seed=0)
    cfg = tiny_cfg_dict(tmp / "data", iters=2, eval_interval=2, checkpoint_interval=2)
    cfg["method"] = {"name": "pico"}
    cfg["loss"] = {"contrast": {"warmup_iters": 0, "max_samples": 32, "max_views": 2, "proj_dim": 16}}
    cfg_path = tmp / "pico.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    Trainer(load_config(cfg_path), tmp / "work").run()
    return cfg_path, tmp / "work/iter_2.pth"


def run(cfg, ckpt, out, *extra):
    return main([str(cfg), str(ckpt), "--out", str(out), "--num-images", "5", "--per-class", str(PER_CLASS),
                 "--perplexity", "5", *extra])


def test_picture_and_json_seeded(trained, tmp_path):
    from segproto.data.taxonomy import Taxonomy

    cfg, ckpt = trained
    assert run(cfg, ckpt, tmp_path / "a/fig.png") == 0
    with Image.open(tmp_path / "a/fig.png") as im:
        im.verify()
        assert im.format == "PNG" and min(im.size) > 100
    rec = json.loads((tmp_path / "a/fig.json").read_text())
    xy, labels = np.asarray(rec["coords"]), np.asarray(rec["labels"])
    n = len(labels)
    assert xy.shape == (n, 2) and np.isfinite(xy).all() and n > 5
    counts = np.bincount(labels, minlength=len(rec["classes"]))
    assert counts.max() == PER_CLASS and (counts <= PER_CLASS).all()  # the cap binds and holds
    assert max(rec["images"]) < 5
    tax = Taxonomy.from_yaml(Path(yaml.safe_load(cfg.read_text())["data"]["root"]) / "taxonomy.yaml")
    assert rec["parent"] == tax.parent_map(0, -1).tolist()
    assert rec["coarse_labels"] == tax.parent_map(0, -1)[labels].tolist()
    s = rec["settings"]
    assert (s["iteration"], s["embedding"], s["dim"], s["per_class"], s["perplexity"], s["seed"], s["split"]) == (
        2, "proj", 16, PER_CLASS, 5.0, 0, "val")

    assert run(cfg, ckpt, tmp_path / "b/fig.png") == 0  # same arguments: identical points
    again = json.loads((tmp_path / "b/fig.json").read_text())
    assert again["coords"] == rec["coords"] and again["labels"] == rec["labels"]


def test_errors(trained, tmp_path, capsys):
    from segproto.export import main as export_main

    cfg, ckpt = trained

    def fails(code, *args, out=tmp_path / "fig.png", extra=()):
        with pytest.raises(SystemExit) as e:
            run(*args, out, *extra)
        assert e.value.code == code
        return capsys.readouterr().err

    assert "checkpoint not found" in fails(1, cfg, tmp_path / "missing.pth")
    assert "config" in fails(2, tmp_path / "missing.yaml", ckpt).lower()
    assert "unsupported suffix" in fails(2, cfg, ckpt, out=tmp_path / "fig.jpg")

    assert export_main([str(cfg), str(ckpt), str(tmp_path / "exported.pth")]) == 0
    capsys.readouterr()
    err = fails(1, cfg, tmp_path / "exported.pth")
    assert "exported model" in err and "training checkpoint" in err

    state = torch.load(ckpt, weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("proj.")}
    torch.save(state, tmp_path / "no_proj.pth")
    assert "no projection-head weights" in fails(1, cfg, tmp_path / "no_proj.pth")

    err = fails(1, cfg, ckpt, extra=["--per-class", "1", "--num-images", "1", "--perplexity", "50"])
    assert "perplexity" in err and "--perplexity" in err
    assert not (tmp_path / "fig.png").exists()
