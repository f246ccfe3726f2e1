"""DDP on 2 CPU processes (gloo): torchrun, two torchrun "nodes" and Ray Train workers (one of them
killed mid-run: the worker group restarts from its last registered checkpoint) give the same run, and the
update of each step is the mean of the ranks' gradients over the global batch.

A 1-process run of the same global batch is not the reference to compare metrics with: BatchNorm
normalises each rank's images with that rank's batch statistics (SyncBatchNorm needs a GPU), which
on this tiny model changes the first update by more than its own norm; metrics after a few
iterations agree within points either way, with or without the gradient all-reduce. The exact
reference is one process that takes the same global batch of 4 as the two ranks' halves and steps
with the mean of their gradients (:func:`_reference_steps`).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from segproto.config import load_config
from segproto.engine import Trainer, load_checkpoint
from segproto.engine.builder import train_loader
from tests.engine.conftest import REPO, tiny_cfg_dict
from tests.engine.ray_procs import private_ray_tmp, processes_using

PER_RANK = ["data.batch_size=2", "model.dropout=0"]  # 2 ranks x 2 = the global batch of 4; no per-rank dropout masks
TIMEOUT = 300
# Evaluations and checkpoints every 3 iterations. The run is long enough for Ray Train's controller,
# which registers a checkpoint some time after the workers report it (seconds on a loaded machine),
# to register one while the workers still train: the kill must land mid-run.
ITERS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _train(cfg: Path, work_dir: Path) -> list[str]:
    return ["-m", "segproto.train", str(cfg), "--work-dir", str(work_dir), "--cfg-options", *PER_RANK]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_root):
    """The same 2-rank run of the tiny config (``ITERS`` iterations, evaluations and checkpoints every
    3) by torchrun, by two torchrun launches as two nodes, and by ``--launcher ray``."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_cfg_dict(tiny_root, iters=ITERS)))
    out = {"cfg": cfg, "torchrun": tmp / "torchrun", "nodes": tmp / "nodes", "ray": tmp / "ray"}
    _check(subprocess.run(_torchrun("--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                                    str(_free_port()), *_train(cfg, out["torchrun"])),
                          capture_output=True, text=True, cwd=REPO, env=_env(), timeout=TIMEOUT))
    # Two "nodes" on this machine: one process each, a c10d rendezvous on 127.0.0.1 (what each node of
    # a cluster runs, with the head node's address); the work dir stands for a shared mount.
    port = str(_free_port())
    nodes = [subprocess.Popen(_torchrun("--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
                                        "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "ddp-test",
                                        "--local-addr", "127.0.0.1", *_train(cfg, out["nodes"])),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=_env())
             for _ in range(2)]
    try:
        logs = [p.communicate(timeout=TIMEOUT)[0] for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    # Ray Train workers; one of them is killed (SIGKILL) as soon as the controller has registered a
    # checkpoint: the worker group restarts from it (--max-failures 1) and the run still ends as torchrun's.
    log = tmp / "ray.log"
    with private_ray_tmp() as ray_tmp, open(log, "w") as stdout:
        proc = subprocess.Popen([sys.executable, *_train(cfg, out["ray"]), "--launcher", "ray", "--workers", "2",
                                 "--max-failures", "1"], stdout=stdout, stderr=subprocess.STDOUT, cwd=REPO,
                                env=_env(RAY_TMPDIR=ray_tmp))
        try:
            deadline = time.monotonic() + TIMEOUT
            while (workers := _ray_train_workers(ray_tmp)) == [] or not (at := _registered(out["ray"] / "ray_train")):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.1)
            os.kill(workers[-1], signal.SIGKILL)
            out["killed_after"] = at
            assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, log.read_text()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    out["ray_log"] = log.read_text()
    return out


def _ray_train_workers(ray_tmp: str) -> list[int]:
    return [pid for pid, cmd in processes_using(ray_tmp) if cmd.startswith("ray::RayTrainWorker")]


def _registered(run_dir: Path) -> int:
    """Iteration of the latest checkpoint Ray Train registered in ``run_dir`` (0: none)."""
    try:
        latest = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    except (OSError, ValueError, KeyError):
        return 0
    return int(latest["metrics"]["iter"]) if latest else 0


def _metrics(work_dir: Path) -> dict:
    return json.loads((work_dir / "metrics.json").read_text())


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_ray_train_workers_and_two_nodes_give_the_torchrun_run(runs):
    want = _metrics(runs["torchrun"])
    for other in ("ray", "nodes"):
        got = _metrics(runs[other])
        keys = ("aAcc", "mIoU", "mAcc", "IoU")
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
        for it in (3, 6, ITERS):
            assert _same_weights(runs[other] / f"iter_{it}.pth", runs["torchrun"] / f"iter_{it}.pth"), (other, it)
        assert load_checkpoint(runs[other] / f"iter_{ITERS}.pth")["meta"]["world_size"] == 2
    assert not (runs["ray"] / "ray_train").exists()  # Ray Train's copies are removed after a successful run
    at = runs["killed_after"]
    assert at < ITERS, f"the controller registered iteration {at} only: the kill came after the training"
    # the killed worker's group went on from the registered checkpoint (or a later one it registered meanwhile)
    resumed = [int(m) for m in re.findall(r"resumed from \S+ at iteration (\d+)", runs["ray_log"])]
    assert len(resumed) == 1 and at <= resumed[0] < ITERS, (at, resumed)
    scalars = [json.loads(line) for line in (runs["ray"] / "scalars.jsonl").read_text().splitlines()]
    assert [s["iter"] for s in scalars if s["mode"] == "val"] == list(range(3, ITERS + 1, 3))


@pytest.mark.slow
def test_ddp_evaluation_sums_over_ranks(runs):
    # The confusion matrix is summed over ranks, and every rank holds the same weights (the gradient
    # all-reduce): a 1-process test of the checkpoint gives exactly the DDP run's numbers.
    out = runs["cfg"].parent / "test.json"
    ckpt = runs["torchrun"] / f"iter_{ITERS}.pth"  # the run's last: metrics.json is its evaluation
    _check(subprocess.run([sys.executable, "-m", "segproto.test", str(runs["cfg"]), str(ckpt),
                           "--split", "val", "--out", str(out)], capture_output=True, text=True, cwd=REPO, env=_env(),
                          timeout=TIMEOUT))
    assert json.loads(out.read_text())["IoU"] == _metrics(runs["torchrun"])["IoU"]


def _reference_steps(cfg, work_dir: Path, steps: int) -> dict:
    """One process, the same global batch: rank r's 2 images are the loader's draws r, r + 2, ...;
    each step takes the mean of the two halves' gradients (each half with its own BatchNorm
    statistics, as on its rank). Returns the parameters after ``steps`` steps."""
    t = Trainer(cfg, work_dir)  # the same initial weights, optimizer and schedule as rank 0
    t.method.train()
    loaders = [iter(train_loader(t.train_set, cfg, rank, 2, 0)) for rank in (0, 1)]
    params = [p for p in t.method.parameters() if p.requires_grad]
    for it in range(1, steps + 1):
        grads = []
        for loader in loaders:
            batch = next(loader)
            t.optimizer.zero_grad(set_to_none=True)
            out = t.method(batch["img"], batch["gt"], it)
            sum(v for k, v in out.items() if k.startswith("loss")).backward()
            grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params])
        for p, g0, g1 in zip(params, *grads):
            p.grad = (g0 + g1) / 2
        t.optimizer.step()
        t.scheduler.step()
    return {n: p.detach().clone() for n, p in t.method.named_parameters()}


def _distance(a: dict, b: dict) -> float:
    return sum(float((a[k].double() - b[k].double()).norm() ** 2) for k in a) ** 0.5


@pytest.mark.slow
def test_each_ddp_step_is_the_mean_of_the_ranks_gradients(runs, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each DDP process
    try:
        cfg = load_config(runs["cfg"], PER_RANK)
        want = _reference_steps(cfg, tmp_path / "reference", 3)
        init = {n: p.detach() for n, p in Trainer(cfg, tmp_path / "init").method.named_parameters()}
    finally:
        torch.set_num_threads(threads)
    got = load_checkpoint(runs["torchrun"] / "iter_3.pth")["model"]
    ddp, moved = _distance(want, {k: got[k] for k in want}), _distance(want, init)
    # Float rounding only (the all-reduce sums in another order): far below the 3 steps' own size. A
    # rank stepping on its own gradient, or on the full batch with its BatchNorm statistics, is off by
    # about the size of the steps themselves.
    assert ddp < 1e-4 * moved, (ddp, moved)
