"""RNG state capture/restore in a form ``torch.load(weights_only=True)`` accepts."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist

from segproto.utils import dist as sdist


def rng_state() -> dict:
    """This process's torch / CUDA / Python / NumPy RNG states (tensors and plain containers)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict]:
    """Every rank's RNG state, in rank order (a one-element list for one process)."""
    mine = rng_state()
    if not sdist.is_dist():
        return [mine]
    out: list = [None] * sdist.world_size()
    dist.all_gather_object(out, mine)
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
