"""Resume state: what a run killed after an evaluation needs to continue as if it had not stopped.

One file (`ResumeFile`), written atomically by rank 0 after each evaluation: the tuned tensors, the optimizer (and
grad scaler) state, the epoch, the selection so far (history, best score, best tuned tensors), and for every rank
all the generators it draws from (torch's CPU and CUDA ones, Python's `random`, NumPy's global one, the training
batches' shuffle) with its training seconds and images. A resumed run therefore computes what the uninterrupted
one does. The tuned tensors of a model are read (`trainable_state`) and written back (`load_trainable`) here only.
"""
from __future__ import annotations

import json
import logging
import os
import random

import numpy as np
import torch
import torch.nn as nn

from . import distributed

log = logging.getLogger(__name__)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of `model`'s trainable tensors, by name (unaffected by later training)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` (a `trainable_state`, or part of one) into `model`'s parameters of the same names."""
    with torch.no_grad():
        named = dict(model.named_parameters())
        for n, t in state.items():
            named[n].copy_(t)


def rng_state(batches, device: torch.device) -> dict:
    """Every generator this process draws from during training, as tensors and plain numbers (weights_only)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    out = {"torch": torch.get_rng_state(),
           "python": [version, list(internal), gauss],
           "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                     "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                     "gauss": float(np_state["gauss"])}}
    if hasattr(batches, "gen"):
        out["data"] = batches.gen.get_state()
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(mine: dict, batches, device: torch.device) -> None:
    """Restore this process's generators from its `rng_state` (entries it lacks are left alone)."""
    torch.set_rng_state(mine["torch"])
    if "python" in mine:
        version, internal, gauss = mine["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in mine:
        npst = mine["numpy"]
        np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                             npst["gauss"]))
    if "cuda" in mine and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], device)
    if hasattr(batches, "gen") and "data" in mine:
        batches.gen.set_state(mine["data"])


def _rank_entry(state: dict) -> dict:
    """This process's generators and counts in a resume state. A state saved with another number of processes
    gives every process rank 0's; one written before Python's and NumPy's generators were saved (keys rng,
    data_rng) gives what it holds."""
    ranks, world = state.get("rngs"), distributed.world_size()
    if ranks:
        return ranks[distributed.rank()] if len(ranks) == world else ranks[0]
    rng, data_rng = state["rng"], state["data_rng"]
    if len(state.get("rng_ranks", ())) == world:
        rng, data_rng = state["rng_ranks"][distributed.rank()]
    return {"torch": rng, "data": data_rng}


class ResumeFile:
    """The resume state at `path`: `save` after each evaluation (every rank calls it; rank 0 writes), and
    `restore` at the start, unless `read` is False (start fresh, e.g. `--force`). An unusable file (truncated,
    corrupt, another model's) is logged as a warning naming it, and the run starts fresh; it is replaced at the
    next evaluation."""

    def __init__(self, path: str, read: bool = True):
        self.path, self.read = path, read

    def restore(self, model: nn.Module, optim, result, batches, device: torch.device) -> int:
        """Load the state into the model's trainable tensors, `optim` (a ScheduledOptimizer), `result` (a
        TrainResult: history, selection, counts and times) and this process's generators; returns the 0-based
        epoch to continue from (0: no usable state, nothing changed)."""
        state = self._load(model, optim) if self.read else None
        if state is None:
            return 0
        load_trainable(model, state["tuned"])
        epoch = state["epoch"]
        optim.resume_at(epoch)
        result.history, result.best_score = state["history"], state["best"]
        result.best_state = state.get("best_state") or None
        mine = _rank_entry(state)
        set_rng_state(mine, batches, device)
        result.train_seconds = float(mine.get("train_seconds", 0.0))
        result.images_seen = int(mine.get("images_seen", 0))
        result.resumed_epoch, result.earlier_seconds = epoch, float(state.get("wall_seconds", 0.0))
        log.info("resumed from %s at epoch %d", self.path, epoch)
        return epoch

    def _load(self, model: nn.Module, optim) -> dict | None:
        """The state at `path` with the optimizer (and grad scaler) state loaded, or None (warned) when there is
        none or it cannot be used. Nothing is changed unless the state is usable."""
        if not os.path.isfile(self.path):
            return None
        try:
            # On the CPU: generator states must be CPU tensors; tuned tensors and optimizer state move on load.
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError(f"a {type(state).__name__}, not a resume state")
            named = dict(model.named_parameters())
            tuned = state["tuned"]
            trainable = {n for n, p in named.items() if p.requires_grad}
            if set(tuned) != trainable:
                raise ValueError(f"its tensors are not this model's trainable ones ({len(tuned)} vs {len(trainable)})")
            for n, t in tuned.items():
                if t.shape != named[n].shape:
                    raise ValueError(f"{n} has shape {tuple(t.shape)}, the model {tuple(named[n].shape)}")
            state["epoch"], state["best"] = int(state["epoch"]), float(state["best"])
            state["history"] = json.loads(state["history"])
            if not isinstance(state["history"], list):
                raise ValueError("its history is not a list")
            if not (state.get("rngs") or ("rng" in state and "data_rng" in state)):
                raise ValueError("no generator states")
            optim.load_state_dict(state)  # checks its groups against the model's before changing anything
        except Exception as e:  # whatever is wrong with the file, the run can start fresh
            log.warning("%s: unusable resume state (%s: %s); starting the run fresh", self.path, type(e).__name__,
                        str(e).splitlines()[0][:300] if str(e) else "")
            return None
        return state

    def save(self, model: nn.Module, optim, epoch: int, result, batches, device: torch.device,
             wall_seconds: float) -> None:
        """Write the state after `epoch` epochs (rank 0; called on every rank, for the generators and counts of
        each: ranks draw different dropout and augmentation numbers)."""
        from .checkpoint import atomic_write_bytes

        mine = {**rng_state(batches, device), "images_seen": result.images_seen,
                "train_seconds": result.train_seconds}
        ranks = distributed.gather_objects(mine)
        if not distributed.is_main():
            return
        state = {"tuned": trainable_state(model), **optim.state_dict(), "epoch": epoch, "best": result.best_score,
                 "history": json.dumps(result.history), "best_state": result.best_state or {},
                 "rngs": ranks, "wall_seconds": wall_seconds}
        atomic_write_bytes(self.path, lambda tmp: torch.save(state, tmp))
