"""The one trainer. A method plugs in a module returning named losses; never a new loop."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import segproto
from segproto.config import config_to_dict, save_config
from segproto.config.fit import fit_line, fit_to_run
from segproto.data import check_dataset
from segproto.evaluation import format_table
from segproto.visualize import write_confusion
from segproto.methods import build_method
from segproto.utils import dist as sdist
from segproto.utils.checkpoint import (CheckpointError, find_last_checkpoint, load_checkpoint, remove_stale_temps,
                                       save_checkpoint, save_marker)
from segproto.utils.env import format_machine, machine_info
from segproto.utils.log import echo

from .builder import build_split, eval_loader, label_space, level_target_fn, train_loader
from .evaluate import evaluate
from .loading import describe, load_weights_checked
from .fewshot import evaluate_fewshot, format_fewshot
from .logger import ScalarWriter, log_line, memory_mb, save_plots
from .optim import build_optimizer, build_scheduler
from .run_log import LOG_NAME, RunLog, WorkDirError, claim_work_dir  # noqa: F401  (WorkDirError re-exported)
from .run_utils import NonFiniteLossError, check_finite_state, check_streams, eval_scalars, json_clean, setup_determinism, short_list
from .state import gather_rng_states, rng_state, seed_everything, set_rng_state


EvalCallback = Callable[[int, dict, Optional[Path]], None]


class Trainer:
    """Iteration-based training of ``cfg.method`` with evaluation, checkpoints and resume.

    Args:
        cfg: A validated :class:`segproto.config.Config`.
        work_dir: Output directory (config, ``train.log``, scalars, checkpoints, metrics, confusion
            matrix, plots); ``config.yaml`` records it.
        resume: ``True`` = the work dir's last checkpoint; a path = that checkpoint; falsy = fresh run.
            A fresh run refuses a work dir that holds another run's checkpoints, ``last_checkpoint``,
            ``scalars.jsonl`` or ``metrics.json`` (:class:`WorkDirError`) unless ``force``.
        force: A fresh run first removes those files of an earlier run from ``work_dir``.
        check_data: Check every split before the first iteration (:meth:`_check_data`); the
            command line always does.
        on_eval: Called on every rank after each evaluation as ``on_eval(iteration, metrics, checkpoint)``,
            once that iteration's checkpoint is saved; ``metrics`` are the global ones (the same on every
            rank); ``checkpoint`` is its path on rank 0, ``None`` on the other ranks and when the
            iteration saves none (``train.checkpoint_interval`` not aligned with ``train.eval_interval``).
            Used by the Ray Tune sweeps (``search/``) and Ray Train workers (``segproto.launch``,
            where every rank reports) to report mIoU and checkpoints.
    """

    def __init__(self, cfg: Any, work_dir: Union[str, Path], resume: Union[bool, str, None] = None,
                 on_eval: Optional[EvalCallback] = None, force: bool = False, check_data: bool = True) -> None:
        self.on_eval = on_eval
        self.rank, self.world = sdist.init_distributed()
        self.main = self.rank == 0
        self.log = RunLog(active=self.main)  # train.log: every line from here on
        try:
            self._setup(cfg, work_dir, resume, force, check_data)
        except BaseException:
            self.log.close()
            raise

    def _setup(self, cfg: Any, work_dir: Union[str, Path], resume: Union[bool, str, None], force: bool,
               check_data: bool) -> None:
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
        self.work_dir = Path(work_dir).absolute()
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise WorkDirError(f"work dir {self.work_dir} exists and is not a directory")
        if not resume:
            claim_work_dir(self.work_dir, force, self.main)
        fitted = fit_to_run(cfg)  # iteration-valued schedule points clamped to train.iters
        self.cfg = cfg = dataclasses.replace(fitted.cfg, work_dir=str(self.work_dir))
        if self.main:
            clamp = [fit_line(fitted, cfg.train.iters)] if fitted.clamped else []
            for line in clamp + [f"warning: {w}" for w in fitted.warnings]:
                echo(line)
        setup_determinism(cfg.deterministic)
        seed_everything(cfg.seed + self.rank)
        self.train_set = build_split(cfg, cfg.data.train_split, train=True)
        self.val_set = build_split(cfg, cfg.data.val_split, train=False)
        self.unlabeled_set = (build_split(cfg, cfg.data.unlabeled_split, train=True)
                              if cfg.data.unlabeled_split else None)
        if check_data:
            self._check_data()
        self.taxonomy = self.train_set.taxonomy
        self.num_classes, self.class_names, self.palette = label_space(self.train_set, cfg.data.level)
        self.target_fn = level_target_fn(self.taxonomy, cfg.data.level)
        self.method = build_method(cfg, self.num_classes, self.taxonomy).to(self.device)
        check_streams(cfg, self.method)
        self.optimizer = build_optimizer(self.method, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, cfg.optim, cfg.train.iters)
        amp_cuda = cfg.train.amp and self.device.type == "cuda"
        self.amp_dtype = (torch.float16 if amp_cuda else torch.bfloat16) if cfg.train.amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_cuda)
        self.start_iter, self.best = 0, {"mIoU": -1.0, "iter": 0}
        # training seconds of the processes before a resume (its checkpoint's count; None: not recorded there)
        self.seconds_before: Optional[float] = 0.0
        self._t_run = time.perf_counter()
        self.last_ckpt: Optional[Path] = None
        self.confusion: Optional[list] = None  # of the final evaluation
        self._saved: list[tuple[int, Path]] = []  # (iteration, path): resumed from or written by this run
        self._stats = [(n, b) for n, b in self.method.named_buffers() if n.endswith(("running_mean", "running_var"))]
        if resume:
            self._resume(resume)
        elif cfg.train.load_from:
            self._load_from(cfg.train.load_from)
        if self.main:  # only once the run is set up: a failed start leaves the work dir as it was
            self.work_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.work_dir)
            save_config(cfg, self.work_dir / "config.yaml")
            self.log.start(self.work_dir / LOG_NAME, append=bool(resume))
            echo(f"segproto {segproto.__version__}: {describe(config_to_dict(cfg), list(self.class_names))}, "
                 f"train.iters {cfg.train.iters} (from {self.start_iter}), batch {cfg.data.batch_size} x "
                 f"{self.world} process(es) on {self.device}; work dir {self.work_dir}")
            echo(f"machine: {format_machine(machine_info())}; {torch.get_num_threads()} threads")
        sdist.barrier()
        self.model = self.method
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.method, device_ids=ids, find_unused_parameters=self.method.find_unused_parameters)

    # ------------------------------------------------------------------ state
    def _state(self, it: int) -> dict:
        return {
            "meta": {"iter": it, "segproto": segproto.__version__, "config": config_to_dict(self.cfg),
                     "train_seconds": round((self.seconds_before or 0.0) + time.perf_counter() - self._t_run, 3),
                     "classes": list(self.class_names), "world_size": self.world,
                     "palette": [list(map(int, c)) for c in self.palette] if self.palette else None},
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": gather_rng_states(),
            "best": dict(self.best),
        }

    def _check_data(self) -> None:
        """Every split the run reads is checked before the first iteration: not empty, every
        listed file there, every image and label file decoded, label values checked, so a bad file
        ends the run before any training, not hours into it (decoding is threaded; the cost is in
        docs/reliability.md)."""
        cfg = self.cfg.data
        splits = [("data.train_split", cfg.train_split, self.train_set),
                  ("data.val_split", cfg.val_split, self.val_set)]
        if self.unlabeled_set is not None:
            splits.append(("data.unlabeled_split", cfg.unlabeled_split, self.unlabeled_set))
        for key, name, ds in splits:
            check_dataset(ds, f"{key} '{name}'", full=True)

    def _load_weights(self, path: Path, state: dict, strict: bool) -> tuple[list, list]:
        """Loads ``state['model']``; a checkpoint of another method, class list or model is refused
        with one line saying what it was trained with and what this config has."""
        return load_weights_checked(self.method, path, state, self.cfg, list(self.class_names), strict)

    def _resume(self, resume: Union[bool, str]) -> None:
        path = find_last_checkpoint(self.work_dir) if resume is True else Path(resume)
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self.work_dir} (no last_checkpoint or iter_*.pth)")
        state = load_checkpoint(path)
        meta = state.get("meta") or {}
        if meta.get("world_size", 1) != self.world:
            raise ValueError(f"{path}: saved with {meta.get('world_size')} processes, resumed with {self.world}; "
                             "exact resume needs the same number")
        old_cfg, it = meta.get("config") or {}, int(meta.get("iter", 0))
        for key in ("iters",):
            old = old_cfg.get("train", {}).get(key)
            if old is not None and old != getattr(self.cfg.train, key):
                raise ValueError(f"{path}: trained with train.{key}={old} (at iteration {it}); this config has "
                                 f"train.{key}={getattr(self.cfg.train, key)}; the LR schedule depends on it: resume "
                                 f"with train.{key}={old}, or fine-tune with train.load_from={path}")
        old_sched = old_cfg.get("sched")
        if old_sched is not None and old_sched != config_to_dict(self.cfg)["sched"]:
            new = config_to_dict(self.cfg)["sched"]
            diff = ", ".join(f"sched.{k}={old_sched.get(k)!r} -> {new.get(k)!r}" for k in new if old_sched.get(k) != new.get(k))
            raise ValueError(f"{path}: the LR schedule differs from the checkpoint's ({diff}); resume with the "
                             f"checkpoint's values, or fine-tune with train.load_from={path}")
        if it > self.cfg.train.iters:
            raise ValueError(f"{path}: iteration {it} is past train.iters={self.cfg.train.iters}")
        self._load_weights(path, state, strict=True)
        fresh_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if fresh_lrs != list(self.scheduler.base_lrs):  # optim.lr changed: the schedule goes on from the new base
            old_lrs = list(self.scheduler.base_lrs)
            self.scheduler.base_lrs = fresh_lrs
            for g, base, fn in zip(self.optimizer.param_groups, fresh_lrs, self.scheduler.lr_lambdas):
                g["initial_lr"], g["lr"] = base, base * fn(self.scheduler.last_epoch)
            if self.main:
                echo(f"resume: base learning rates {old_lrs} -> {fresh_lrs} (from this config)")
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][self.rank])
        self.start_iter, self.best, self.last_ckpt = it, dict(state["best"]), path
        self.seconds_before = None if meta.get("train_seconds") is None else float(meta["train_seconds"])
        self._saved.append((it, path))
        if self.main:
            echo(f"resumed from {path} at iteration {self.start_iter}")

    def _load_from(self, path: str) -> None:
        state = load_checkpoint(path)
        weights = state["model"]
        missing, unexpected = self._load_weights(Path(path), state, strict=False)
        if self.main:
            echo(f"load_from {path}: {len(weights)} tensors loaded; missing {len(missing)}, unexpected {len(unexpected)}")

    # ------------------------------------------------------------------ loop
    def evaluate(self) -> dict:
        """Evaluates the current weights on the val split as the loop does at an evaluation
        iteration, and puts every RNG back as it was: a run resumed from a checkpoint and then
        evaluated here trains on exactly as one that is not (the val loader draws its base seed
        from the torch RNG). Collective under DDP: every rank calls it."""
        state = rng_state()
        try:
            return self._evaluate()
        finally:
            set_rng_state(state)

    def _evaluate(self, final: bool = False) -> dict:
        """Whole-image evaluation of the val split (``cfg.test`` is for ``segproto.test``); the final
        one keeps its confusion matrix for ``confusion.json``."""
        sdist.broadcast_buffers(self.method)
        loader = eval_loader(self.val_set, self.cfg, self.rank, self.world)
        if getattr(self.val_set, "episodic", False):
            return evaluate_fewshot(self.method, loader, self.val_set.class_ids, self.val_set.class_names,
                                    self.device, self.amp_dtype)
        metrics = evaluate(self.method, loader, self.num_classes, self.class_names, self.device,
                           self.cfg.data.ignore_index, self.taxonomy, self.cfg.data.level, self.amp_dtype,
                           self.target_fn, keep_confusion=final)
        self.confusion = metrics.pop("confusion", None)
        return metrics

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
        ok = torch.isfinite(total.detach())
        if self._stats:  # the forward pass updated the BatchNorm statistics: checked with the loss
            ok = ok & torch.isfinite(torch.cat([b.detach().reshape(-1).float() for _, b in self._stats])).all()
        finite = ok.float().to(self.device).reshape(())
        if sdist.all_reduce_sum(finite).item() < self.world:
            if not bool(torch.isfinite(total.detach())):
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                raise NonFiniteLossError(f"non-finite loss at iteration {it} ({values}); training stopped. "
                                         f"{self._last_good(it)}")
            bad = [n for n, b in self._stats if not bool(torch.isfinite(b).all())] or ["on another rank"]
            raise NonFiniteLossError(f"non-finite BatchNorm statistics at iteration {it} ({short_list(bad)}; the loss was "
                                     f"{float(total.detach()):.4g}); training stopped (lower optim.lr or set "
                                     f"optim.grad_clip). {self._last_good(it)}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.method.after_step(it)  # e.g. the EMA teacher of semi-supervised methods
        logged = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
        logged["loss"] = float(total.detach())
        return logged

    def run(self) -> dict:
        """Trains to ``train.iters``; returns the final evaluation metrics. Every printed line, and
        the error that stops the run, also goes to ``train.log``."""
        try:
            return self._run()
        except BaseException as exc:
            self.log.write(f"error: {type(exc).__name__}: {exc}")
            raise
        finally:
            self.log.close()

    def _run(self) -> dict:
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
        self._t_run = time.perf_counter()
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
                metrics = self._evaluate(final=it == tcfg.iters)
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
                check_finite_state(state, it, self.device, self.world, self.last_ckpt)
                if self.main:
                    self.last_ckpt = saved = save_checkpoint(state, self.work_dir, it, tcfg.max_keep_ckpts, is_best)
                    self._saved = [(i, p) for i, p in self._saved if p.is_file()] + [(it, saved)]
                sdist.barrier()
            if self.on_eval is not None and (it % tcfg.eval_interval == 0 or it == tcfg.iters):
                self.on_eval(it, metrics, saved)
        if bar is not None:
            bar.close()
        if not metrics:  # resumed at the end: evaluate the final weights
            metrics = self._evaluate(final=True)
        if self.main:
            self._finish(metrics, writer)
        return metrics

    def _last_good(self, it: int) -> str:
        """The stop message's last good checkpoint. The forward pass of iteration ``it`` used the
        weights of ``it - 1``, so a checkpoint of ``it - 1`` is not named (and ``last_checkpoint``
        is pointed back to the one before it, which a plain ``--resume`` then takes)."""
        good = [(i, p) for i, p in self._saved if i <= it - 2]
        suspect = [p for i, p in self._saved if i == it - 1]
        if not good:
            return "Last good checkpoint: none" + (f" ({suspect[0].name} holds the weights that gave it)" if suspect else "")
        path = good[-1][1]
        if suspect and self.main:
            try:
                save_marker(self.work_dir, path)
            except OSError:
                pass
        note = (f" ({suspect[0].name} holds the weights that gave it; last_checkpoint points to {path.name})"
                if suspect else "")
        return f"Last good checkpoint: {path}{note}"

    def _finish(self, metrics: dict, writer: ScalarWriter) -> None:
        writer.close()
        segment = time.perf_counter() - self._t_run
        times = {"train_seconds": (self.seconds_before or 0.0) + segment, "process_seconds": segment,
                 **({"train_seconds_partial": True} if self.seconds_before is None else {})}
        out = {**metrics, "iter": self.cfg.train.iters, "best": self.best, **times}
        (self.work_dir / "metrics.json").write_text(json.dumps(json_clean(out), indent=2))
        echo(format_fewshot(metrics) if "FB-IoU" in metrics else format_table(metrics, self.class_names))
        for name, lv in metrics.get("levels", {}).items():
            echo(f"level {name}: aAcc {lv['aAcc']:.2f}  mIoU {lv['mIoU']:.2f}  mAcc {lv['mAcc']:.2f}")
        files = [p.name for p in save_plots(self.work_dir, metrics)]
        if self.confusion is not None:
            write_confusion(self.confusion, self.class_names, self.work_dir / "confusion.json",
                            f"iter {self.cfg.train.iters}, split {self.cfg.data.val_split}")
            files += ["confusion.json", "confusion.png"]
        echo(f"work dir: {self.work_dir} (metrics.json, scalars.jsonl, {LOG_NAME}, {', '.join(files)})")


EPISODE_KEYS = ("support_img", "support_mask")
