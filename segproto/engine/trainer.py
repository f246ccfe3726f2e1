"""The one trainer. A method plugs in a module returning named losses; never a new loop."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import segproto
from segproto.config import config_to_dict, save_config
from segproto.evaluation import format_table
from segproto.methods import build_method

from . import dist as sdist
from .builder import build_split, eval_loader, label_space, level_target_fn, train_loader
from .checkpoint import find_last_checkpoint, load_checkpoint, save_checkpoint
from .evaluate import evaluate
from .fewshot import evaluate_fewshot, format_fewshot
from .logger import ScalarWriter, echo, log_line, memory_mb, save_plots
from .optim import build_optimizer, build_scheduler
from .state import gather_rng_states, seed_everything, set_rng_state


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the run stops and earlier checkpoints stay as they were."""


def _setup_determinism(deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


EvalCallback = Callable[[int, dict, Optional[Path]], None]


class Trainer:
    """Iteration-based training of ``cfg.method`` with evaluation, checkpoints and resume.

    Args:
        cfg: A validated :class:`segproto.config.Config`.
        work_dir: Output directory (config, scalars, checkpoints, metrics, plots).
        resume: ``True`` = the work dir's last checkpoint; a path = that checkpoint; falsy = fresh run.
        on_eval: Called on rank 0 after each evaluation as ``on_eval(iteration, metrics, checkpoint)``,
            once that iteration's checkpoint is saved; ``checkpoint`` is its path, or ``None`` when the
            iteration saves none (``train.checkpoint_interval`` not aligned with ``train.eval_interval``).
            Used by the Ray Tune sweeps (``search/``) to report mIoU and checkpoints.
    """

    def __init__(self, cfg: Any, work_dir: Union[str, Path], resume: Union[bool, str, None] = None,
                 on_eval: Optional[EvalCallback] = None) -> None:
        self.cfg = cfg
        self.on_eval = on_eval
        self.rank, self.world = sdist.init_distributed()
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
        self.work_dir = Path(work_dir).absolute()
        self.main = self.rank == 0
        _setup_determinism(cfg.deterministic)
        seed_everything(cfg.seed + self.rank)
        if self.main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.work_dir / "config.yaml")
        sdist.barrier()
        self.train_set = build_split(cfg, cfg.data.train_split, train=True)
        self.val_set = build_split(cfg, cfg.data.val_split, train=False)
        self.unlabeled_set = (build_split(cfg, cfg.data.unlabeled_split, train=True)
                              if cfg.data.unlabeled_split else None)
        self.taxonomy = self.train_set.taxonomy
        self.num_classes, self.class_names, self.palette = label_space(self.train_set, cfg.data.level)
        self.target_fn = level_target_fn(self.taxonomy, cfg.data.level)
        self.method = build_method(cfg, self.num_classes, self.taxonomy).to(self.device)
        _check_streams(cfg, self.method)
        self.optimizer = build_optimizer(self.method, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, cfg.optim, cfg.train.iters)
        amp_cuda = cfg.train.amp and self.device.type == "cuda"
        self.amp_dtype = (torch.float16 if amp_cuda else torch.bfloat16) if cfg.train.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_cuda)
        self.start_iter, self.best = 0, {"mIoU": -1.0, "iter": 0}
        self.last_ckpt: Optional[Path] = None
        if resume:
            self._resume(resume)
        elif cfg.train.load_from:
            self._load_from(cfg.train.load_from)
        self.model = self.method
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.method, device_ids=ids, find_unused_parameters=getattr(self.method, "unused_params", False))

    # ------------------------------------------------------------------ state
    def _state(self, it: int) -> dict:
        return {
            "meta": {"iter": it, "segproto": segproto.__version__, "config": config_to_dict(self.cfg),
                     "classes": list(self.class_names), "world_size": self.world},
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": gather_rng_states(),
            "best": dict(self.best),
        }

    def _resume(self, resume: Union[bool, str]) -> None:
        path = find_last_checkpoint(self.work_dir) if resume is True else Path(resume)
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.work_dir} (no last_checkpoint or iter_*.pth)")
        state = load_checkpoint(path)
        if state["meta"].get("world_size", 1) != self.world:
            raise ValueError(f"{path}: saved with {state['meta'].get('world_size')} processes, resumed with {self.world}; "
                             "exact resume needs the same number")
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][self.rank])
        self.start_iter, self.best, self.last_ckpt = int(state["meta"]["iter"]), dict(state["best"]), path
        if self.main:
            echo(f"resumed from {path} at iteration {self.start_iter}")

    def _load_from(self, path: str) -> None:
        state = load_checkpoint(path)
        weights = state["model"]
        missing, unexpected = self.method.load_state_dict(weights, strict=False)
        if self.main:
            echo(f"load_from {path}: {len(weights)} tensors loaded; missing {len(missing)}, unexpected {len(unexpected)}")

    # ------------------------------------------------------------------ loop
    def _evaluate(self) -> dict:
        sdist.broadcast_buffers(self.method)
        loader = eval_loader(self.val_set, self.cfg, self.rank, self.world)
        if getattr(self.val_set, "episodic", False):
            return evaluate_fewshot(self.method, loader, self.val_set.class_ids, self.val_set.class_names,
                                    self.device, self.amp_dtype)
        return evaluate(self.method, loader, self.num_classes, self.class_names, self.device,
                        self.cfg.data.ignore_index, self.taxonomy, self.cfg.data.level, self.amp_dtype,
                        self.target_fn)

    def _step(self, batch: dict, it: int, unlabeled: Optional[dict] = None) -> dict[str, float]:
        img = batch["img"].to(self.device, non_blocking=True)
        gt = batch["gt"].to(self.device, non_blocking=True)
        if self.target_fn is not None:
            gt = self.target_fn(gt)
        extra = {} if unlabeled is None else {"unlabeled": unlabeled["img"].to(self.device, non_blocking=True)}
        for key in EPISODE_KEYS:  # few-shot episodes: the support set
            if key in batch:
                extra[key] = batch[key].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            out = self.model(img, gt, it, **extra)
        terms = {k: v for k, v in out.items() if k.startswith("loss")}
        total = sum(terms.values())
        finite = torch.tensor(float(torch.isfinite(total.detach())), device=self.device)
        if sdist.all_reduce_sum(finite).item() < self.world:
            values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            last = self.last_ckpt or "none yet"
            raise NonFiniteLossError(f"non-finite loss at iteration {it} ({values}); training stopped. "
                                     f"Last good checkpoint: {last}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if hasattr(self.method, "after_step"):  # e.g. the EMA teacher of semi-supervised methods
            self.method.after_step(it)
        logged = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
        logged["loss"] = float(total.detach())
        return logged

    def run(self) -> dict:
        """Trains to ``train.iters``; returns the final evaluation metrics."""
        cfg, tcfg = self.cfg, self.cfg.train
        writer = ScalarWriter(self.work_dir, tcfg.tensorboard, self.start_iter if self.start_iter else None) if self.main else None
        loader = train_loader(self.train_set, cfg, self.rank, self.world, self.start_iter * cfg.data.batch_size)
        data_iter = iter(loader)
        unlabeled_iter = None
        if self.unlabeled_set is not None:
            unlabeled_iter = iter(train_loader(self.unlabeled_set, cfg, self.rank, self.world,
                                               self.start_iter * cfg.data.batch_size, stream=1))
        bar = None
        if self.main and tcfg.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=tcfg.iters, initial=self.start_iter, desc="train", dynamic_ncols=True, file=sys.stderr)
        window, t_iter, t_data, n_win = defaultdict(float), 0.0, 0.0, 0
        metrics: dict = {}
        t_run = time.perf_counter()
        self.method.train()
        for it in range(self.start_iter + 1, tcfg.iters + 1):
            t0 = time.perf_counter()
            batch = next(data_iter)
            unlabeled = next(unlabeled_iter) if unlabeled_iter is not None else None
            t1 = time.perf_counter()
            for k, v in self._step(batch, it, unlabeled).items():
                window[k] += v
            t_data, t_iter, n_win = t_data + t1 - t0, t_iter + time.perf_counter() - t0, n_win + 1
            if bar is not None:
                bar.update(1)
            if it % tcfg.log_interval == 0 or it == tcfg.iters:
                if self.main:
                    avg = {k: v / n_win for k, v in window.items()}
                    lr = self.optimizer.param_groups[0]["lr"]
                    mem = memory_mb(self.device)
                    eta = t_iter / n_win * (tcfg.iters - it)
                    echo(log_line(it, tcfg.iters, lr, avg, t_iter / n_win, t_data / n_win, mem, eta))
                    writer.write({"mode": "train", "iter": it, "lr": lr, **avg, "time": t_iter / n_win,
                                  "data_time": t_data / n_win, "memory_mb": mem})
                window, t_iter, t_data, n_win = defaultdict(float), 0.0, 0.0, 0
            if it % tcfg.eval_interval == 0 or it == tcfg.iters:
                metrics = self._evaluate()
                is_best = metrics["mIoU"] > self.best["mIoU"]
                if is_best:
                    self.best = {"mIoU": metrics["mIoU"], "iter": it}
                if self.main:
                    scalars = eval_scalars(metrics)
                    writer.write({"mode": "val", "iter": it, **scalars})
                    echo(f"eval iter {it}: " + "  ".join(f"{k} {v:.2f}" for k, v in scalars.items()))
            else:
                is_best = False
            saved = None
            if it % tcfg.checkpoint_interval == 0 or it == tcfg.iters:
                state = self._state(it)  # collective (RNG gather): every rank calls it
                if self.main:
                    self.last_ckpt = saved = save_checkpoint(state, self.work_dir, it, tcfg.max_keep_ckpts, is_best)
                sdist.barrier()
            if self.on_eval is not None and self.main and (it % tcfg.eval_interval == 0 or it == tcfg.iters):
                self.on_eval(it, metrics, saved)
        if bar is not None:
            bar.close()
        if not metrics:  # resumed at the end: evaluate the final weights
            metrics = self._evaluate()
        if self.main:
            self._finish(metrics, time.perf_counter() - t_run, writer)
        return metrics

    def _finish(self, metrics: dict, seconds: float, writer: ScalarWriter) -> None:
        writer.close()
        out = {**metrics, "iter": self.cfg.train.iters, "best": self.best, "train_seconds": seconds}
        (self.work_dir / "metrics.json").write_text(json.dumps(json_clean(out), indent=2))
        echo(format_fewshot(metrics) if "FB-IoU" in metrics else format_table(metrics, self.class_names))
        for name, lv in metrics.get("levels", {}).items():
            echo(f"level {name}: aAcc {lv['aAcc']:.2f}  mIoU {lv['mIoU']:.2f}  mAcc {lv['mAcc']:.2f}")
        plots = save_plots(self.work_dir, metrics)
        echo(f"work dir: {self.work_dir} (metrics.json, scalars.jsonl, {', '.join(p.name for p in plots)})")


EPISODE_KEYS = ("support_img", "support_mask")


def eval_scalars(metrics: dict) -> dict[str, float]:
    """The logged scalars of an evaluation: aAcc/mIoU/mAcc and mIoU per taxonomy level, or the
    few-shot mIoU and FB-IoU."""
    if "FB-IoU" in metrics:
        return {"mIoU": metrics["mIoU"], "FB-IoU": metrics["FB-IoU"]}
    levels = {f"mIoU_{k}": v["mIoU"] for k, v in metrics.get("levels", {}).items()}
    return {"aAcc": metrics["aAcc"], "mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], **levels}


def _check_streams(cfg: Any, method: Any) -> None:
    """A semi-supervised method needs ``data.unlabeled_split``; any other method must not get one."""
    semi = getattr(method, "uses_unlabeled", False)
    if semi and not cfg.data.unlabeled_split:
        raise ValueError(f"method.name {cfg.method.name!r} is semi-supervised: set data.unlabeled_split "
                         "(e.g. train_unlabeled_1-8, with data.train_split train_labeled_1-8)")
    if cfg.data.unlabeled_split and not semi:
        raise ValueError(f"data.unlabeled_split is {cfg.data.unlabeled_split!r} but method.name "
                         f"{cfg.method.name!r} does not use unlabelled images (mean_teacher or prcl do)")


def json_clean(o: Any) -> Any:
    """NaN/inf -> None (strict JSON), numpy scalars -> Python, recursively."""
    if isinstance(o, dict):
        return {str(k): json_clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o
