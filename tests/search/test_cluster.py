"""Multi-worker sweep trials on a simulated cluster: ``ray.cluster_utils.Cluster`` with a head (no
CPU: it hosts the trial drivers) and two worker "nodes" of 2 CPUs each, all on this machine.

One sweep of 2 trials x 2 Ray Train workers (SPREAD over the nodes) goes through a worker killed
(SIGKILL) after its trial's first checkpoint, a worker node removed (and replaced) during the sweep,
and the sweep driver killed (SIGKILL) once one trial has finished, then rerun with ``--resume``:
the finished trial is not trained again, both trials complete, and the trial whose worker was
killed ends with exactly the weights and metrics of an uninterrupted 2-process run of its values.
"""

import csv
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
import yaml

pytest.importorskip("ray")
pytest.importorskip("optuna")

from search.space import apply_params  # noqa: E402
from segproto.config.yaml_io import read_yaml  # noqa: E402
from segproto.engine import load_checkpoint  # noqa: E402
from tests.engine.conftest import REPO  # noqa: E402
from tests.engine.ray_procs import private_ray_tmp, processes_using  # noqa: E402

SPACE = {"optim.lr": {"loguniform": [0.005, 0.05]}}
# The cluster test needs one trial finished while the other still trains. Two trials of the same
# size, both restarted when the node goes, can finish within one poll of each other; seeded TPE
# (seed 0) draws batch sizes 2 and 4 for its two trials, so one takes about twice as long a step.
UNEVEN_SPACE = {**SPACE, "data.batch_size": {"choice": [2, 4]}}
ITERS = 12
DEADLINE_S = 480


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(ray_tmp: str, trial_id: str) -> list[int]:
    """PIDs of the Ray Train workers of one trial (their working directory names the trial's run)."""
    pids = []
    for pid, cmd in processes_using(ray_tmp):
        if cmd.startswith("ray::RayTrainWorker"):
            try:
                if f"ray_train_{trial_id}" in os.readlink(f"/proc/{pid}/cwd"):
                    pids.append(pid)
            except OSError:
                pass
    return pids


def _registered(wd: Path) -> dict[str, int]:
    """Trial id -> iteration of the latest checkpoint Ray Train registered for it."""
    out = {}
    for snap in wd.glob("trial_*/ray_train_*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snap.read_text()).get("latest_checkpoint_result") or {}
        except (OSError, ValueError):
            continue
        if latest:
            out[snap.parent.name.removeprefix("ray_train_")] = int(latest["metrics"]["iter"])
    return out


def _tune_status(wd: Path) -> dict:
    """trial id -> status in the newest experiment state Tune has written to the storage dir (what a
    ``--resume`` reads back)."""
    states = sorted(wd.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for entry in data.get("trial_data", []):
        trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
        out[trial.get("trial_id")] = trial.get("status")
    return out


@pytest.mark.slow
def test_sweep_of_ddp_trials_survives_a_killed_worker_a_lost_node_and_a_killed_driver(write_cfg, write_space, tmp_path,
                                                                                       monkeypatch):
    from ray.cluster_utils import Cluster

    cfg, space, wd = write_cfg(iters=ITERS), write_space(UNEVEN_SPACE), tmp_path / "sweep"
    with private_ray_tmp() as ray_tmp:
        monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
            cluster.wait_for_nodes()
            cmd = [sys.executable, "search/sweep.py", str(cfg), "--space", str(space), "--num-samples", "2",
                   "--work-dir", str(wd), "--address", cluster.address, "--scheduler", "fifo",
                   "--workers-per-trial", "2", "--placement-strategy", "SPREAD", "--max-failures", "2",
                   "--max-concurrent", "2", "--cfg-options", "data.batch_size=2", "model.dropout=0"]
            log = tmp_path / "sweep.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
                deadline = time.monotonic() + DEADLINE_S
                killed = None
                try:
                    while killed is None:  # a trial past its first checkpoint: kill one of its workers
                        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                        for trial_id, it in _registered(wd).items():
                            pids = _workers(ray_tmp, trial_id)
                            if it < ITERS and pids:
                                os.kill(pids[-1], signal.SIGKILL)
                                killed = trial_id
                                break
                        time.sleep(0.2)
                    while not [t for t, it in _registered(wd).items() if t != killed]:  # the other one under way
                        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                        time.sleep(0.2)
                    sizes = {json.loads(p.read_text())["data.batch_size"] for p in wd.glob("trial_*/params.json")}
                    assert sizes == {2, 4}, f"the two trials should draw batch sizes 2 and 4, got {sizes}"
                    # A worker node lost during the sweep (its workers die with it), and a new one joins.
                    assert proc.poll() is None, log.read_text()[-4000:]
                    cluster.remove_node(nodes[0])
                    cluster.add_node(num_cpus=2)
                    # The sweep driver killed once a trial has finished and the other has not.
                    while not (len(done := [t for t, it in _registered(wd).items() if it == ITERS]) == 1
                               and (wd / f"trial_{done[0]}" / "progress.csv").is_file()):
                        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                        time.sleep(0.1)
                    [finished] = [t for t, it in _registered(wd).items() if it == ITERS]
                    while _tune_status(wd).get(finished) != "TERMINATED":  # Tune has stored it as finished
                        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                        time.sleep(0.2)
                    assert proc.poll() is None, "both trials finished before the driver could be killed"
                    proc.kill()
                    proc.wait(timeout=60)
                    done_dir = wd / f"trial_{finished}"
                    snapshot = {p: p.stat().st_mtime_ns for p in done_dir.rglob("*") if "checkpoint_" in p.name}
                    reports = (done_dir / "result.json").read_text()
                    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True,
                                             timeout=max(1.0, deadline - time.monotonic()))
                    log.write_text(log.read_text() + resumed.stdout + resumed.stderr)
                    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
                finally:
                    if proc.poll() is None:
                        proc.kill()
        finally:
            cluster.shutdown()
    text = log.read_text()
    # The finished trial was not trained again: no new report, no new checkpoint.
    assert (done_dir / "result.json").read_text() == reports
    assert {p: p.stat().st_mtime_ns for p in done_dir.rglob("*") if "checkpoint_" in p.name} == snapshot
    with open(wd / "results.csv") as f:
        rows = {r["trial_id"]: r for r in csv.DictReader(f)}
    assert len(rows) == 2 and all(r["status"] == "completed" and int(r["iterations"]) == ITERS for r in rows.values())
    # A worker group restarted from a checkpoint.
    assert re.search(r"resumed from \S+iter_(\d+)\.pth at iteration \1", text)

    # The killed trial ends exactly as an uninterrupted 2-process run of its values.
    params = json.loads((wd / f"trial_{killed}" / "params.json").read_text())
    ref_cfg = tmp_path / "reference.yaml"
    ref_cfg.write_text(yaml.safe_dump(apply_params(read_yaml(str(wd / "sweep_base.yaml")), params)))
    ref = tmp_path / "reference"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(_free_port()), "-m", "segproto.train", str(ref_cfg),
                          "--work-dir", str(ref)], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    reports = [json.loads(line) for line in (wd / f"trial_{killed}" / "result.json").read_text().splitlines()]
    want_metrics = json.loads((ref / "metrics.json").read_text())
    assert {k: reports[-1][k] for k in ("iter", "aAcc", "mIoU", "mAcc")} == {
        "iter": ITERS, **{k: want_metrics[k] for k in ("aAcc", "mIoU", "mAcc")}}
    [final] = (wd / f"trial_{killed}").glob(f"ray_train_{killed}/checkpoint_*/iter_{ITERS}.pth")
    want, got = load_checkpoint(ref / f"iter_{ITERS}.pth")["model"], load_checkpoint(final)["model"]
    assert all((want[k] == got[k]).all() for k in want)


@pytest.mark.slow
def test_asha_stopped_ddp_trial_frees_its_workers(write_cfg, write_space, tmp_path):
    """One trial at a time on a local Ray of 2 CPUs, 2 workers per trial: ASHA stops the first
    trial (at the end of its schedule, or earlier), and the second trial can only start once the
    first one's workers and their placement group are gone."""
    wd = tmp_path / "sweep"
    cmd = [sys.executable, "search/sweep.py", str(write_cfg(iters=6)), "--space", str(write_space(SPACE)),
           "--num-samples", "2", "--work-dir", str(wd), "--workers-per-trial", "2", "--max-concurrent", "1",
           "--cfg-options", "data.batch_size=2"]
    with private_ray_tmp() as ray_tmp:
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=DEADLINE_S,
                             env={**os.environ, "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    with open(wd / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["status"] in ("completed", "early_stopped") for r in rows)
