"""Shared fixtures and trainer-level checks of the method tests (exact resume, export = CE)."""

import shutil
from pathlib import Path

import pytest
import torch

from segproto.config import load_config


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A 32-px synthetic dataset with the sizes of ``tests.engine.conftest.tiny_cfg_dict``."""
    from segproto.data import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic_tiny_methods")
    generate_synthetic(root, num_train=16, num_val=6, num_test=6, image_size=32, seed=0)
    return root


def assert_resume_exact(cfg_path: Path, tmp_path: Path) -> dict:
    """Trains ``cfg_path`` (4 iterations, checkpoints at 2 and 4) straight through and again from
    the iteration-2 checkpoint; asserts every tensor of the final state is bitwise equal.

    Returns:
        The final model state of the uninterrupted run.
    """
    from segproto.engine import Trainer, load_checkpoint

    cfg = load_config(cfg_path)
    Trainer(cfg, tmp_path / "full").run()
    (tmp_path / "part").mkdir()
    shutil.copy(tmp_path / "full/iter_2.pth", tmp_path / "part/iter_2.pth")
    Trainer(cfg, tmp_path / "part", resume=True).run()
    want, got = (load_checkpoint(tmp_path / d / "iter_4.pth")["model"] for d in ("full", "part"))
    for k in want:
        assert torch.equal(want[k], got[k]), k
    return want


def assert_export_equals_ce(cfg_path: Path, ckpt: Path, ce_cfg_path: Path, tmp_path: Path,
                            deployed_prefix: str = "segmentor.") -> None:
    """``python -m segproto.export`` of a method checkpoint gives exactly the parameters (names,
    shapes) of a CE model's export, with the values of the deployed segmentor in the checkpoint."""
    from segproto.engine import Trainer, load_checkpoint
    from segproto.export import main as export_main

    Trainer(load_config(ce_cfg_path), tmp_path / "ce").run()
    ce_ckpt = sorted((tmp_path / "ce").glob("iter_*.pth"))[-1]
    assert export_main([str(cfg_path), str(ckpt), str(tmp_path / "method.pth")]) == 0
    assert export_main([str(ce_cfg_path), str(ce_ckpt), str(tmp_path / "ce.pth")]) == 0
    got, ce = (torch.load(tmp_path / f, weights_only=True)["segmentor"] for f in ("method.pth", "ce.pth"))
    assert [(k, v.shape) for k, v in got.items()] == [(k, v.shape) for k, v in ce.items()]
    trained = load_checkpoint(ckpt)["model"]
    for k, v in got.items():
        assert torch.equal(v, trained[deployed_prefix + k]), k


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_entry(rank: int, world: int, port: int, out_dir: str, body) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(body(rank), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ddp(body, tmp_path: Path, world: int = 2) -> list:
    """Runs ``body(rank) -> dict`` (a module-level function) in ``world`` gloo processes; returns
    what each rank returned, in rank order."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_entry, args=(world, _free_port(), str(tmp_path), body), nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]


def ddp_steps(method, batch_fn, rank: int, iters=(1, 2, 3)) -> None:
    """A few SGD steps of ``method`` wrapped in DDP, rank-specific data from ``batch_fn(seed)``."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(method)
    opt = torch.optim.SGD(method.parameters(), lr=0.01)
    for it in iters:
        img, gt = batch_fn(100 * it + rank)  # different data on each rank
        out = model(img, gt, it)
        opt.zero_grad()
        sum(v for k, v in out.items() if k.startswith("loss")).backward()
        opt.step()


def block_batch(seed: int, num_classes: int, b: int = 2, ignore_corner: bool = True):
    """``b`` 3x32x32 images and labels in 8x8 blocks (exact at stride 8); the top-left block of
    each image is ``ignore_index`` when ``ignore_corner``."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, num_classes, (b, 4, 4), generator=g)
    if ignore_corner:
        blocks[:, 0, 0] = 255
    gt = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
    return torch.randn(b, 3, 32, 32, generator=g), gt
