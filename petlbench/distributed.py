"""One run on several processes (GPUs) through torchrun and DistributedDataParallel.

petlbench launches nothing: `torchrun --nproc_per_node N -m petlbench.cli run ...` starts the processes and
sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT; `setup` joins them into one process group. A submitit job
of N tasks (`petlbench sweep --executor slurm|local --gpus N`) is the other launcher: `from_submitit_job` turns
submitit's job environment into the same variables. Without them (or with WORLD_SIZE=1) every helper here is the
one-process identity: rank 0 of 1, sums returned as given, barriers that return at once, so single-process runs
take exactly the old code path.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from .errors import PETLBenchError


def launched() -> bool:
    """True when a launcher (torchrun) started this process as one of several: WORLD_SIZE > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process's index on its machine (LOCAL_RANK; 0 when not launched): the GPU it takes."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def from_submitit_job() -> bool:
    """In a submitit job of several tasks (SLURM's `--ntasks-per-node`, or the local executor's `tasks_per_node`),
    export torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) from submitit's job environment
    (`submitit.helpers.TorchDistributedEnvironment`: the first host of the job as master, a port drawn from the job
    id), so that `launched` and `setup` treat the job as a torchrun launch. CUDA_VISIBLE_DEVICES is left alone: each
    task sees the node's GPUs and takes cuda:LOCAL_RANK, as under torchrun (engine.resolve_device); hiding all but
    one would leave LOCAL_RANK naming a GPU the task cannot see. The job's own layout overwrites variables the
    submitting shell may have set. Returns whether it exported (False: one task, or not in a submitit job)."""
    import submitit
    from submitit.helpers import TorchDistributedEnvironment

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (the callable called directly)
        return False
    if env.num_tasks <= 1:
        return False
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return True


def is_distributed() -> bool:
    """True when a process group of more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes in the group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the one process that writes files (rank 0), and in a single-process run."""
    return rank() == 0


def setup(device: torch.device) -> bool:
    """Join the process group of a torchrun launch: nccl for a CUDA device (which becomes this process's
    current device), gloo otherwise. Nothing when not launched or already initialised (by petlbench or by
    the caller). Returns whether it initialised the group; a group it initialised is destroyed at exit."""
    if not launched() or dist.is_initialized():
        return False
    if device.type == "cuda":
        if device.index is not None and device.index != local_rank():
            # nccl refuses two ranks on one GPU, with a message that does not say why.
            raise PETLBenchError(f"device={device}: under torchrun each process takes its own GPU (this one is "
                                 f"LOCAL_RANK {local_rank()}); use device=cuda or device=auto")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    atexit.register(teardown)  # torch warns when a process exits with its group alive
    return True


def teardown() -> None:
    """Destroy the process group if one is initialised (idempotent)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """`setup(device)` for the duration of the block; the group is destroyed on leaving it if this call
    initialised it (for library callers and tests; `petlbench run` keeps its group until exit)."""
    initialised = setup(device)
    try:
        yield
    finally:
        if initialised:
            teardown()


def _device() -> torch.device:
    # nccl moves only CUDA tensors, gloo only CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    """Wait until every rank reaches this point."""
    if is_distributed():
        dist.barrier(device_ids=[torch.cuda.current_device()] if dist.get_backend() == "nccl" else None)


def all_reduce_sum(*values: float | torch.Tensor) -> list[float]:
    """The sum over all ranks of each value (numbers or one-element tensors), as floats, in order; the
    values themselves when not distributed. One collective for all of them (exact for integers < 2**53)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=_device()).reshape(()) for v in values])
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any) -> list[Any]:
    """`obj` of every rank (picklable), indexed by rank, on every rank; `[obj]` when not distributed."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` (picklable), on every rank; `obj` itself when not distributed."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def samples_subnetworks(model: torch.nn.Module) -> bool:
    """Whether a training step uses only part of the model's parameters (a supernet method's supernet draws a
    sub-network per step: NOAH's runs DDP with find_unused_parameters=True, supernet_train_prompt.py:354)."""
    info = getattr(model, "petl", None)
    if info is None:
        return False
    from .method import METHODS

    sup = METHODS.get(info.method).supernet if info.method in METHODS else None
    return sup is not None and (info.method_cfg or {}).get(sup.arch_option) == ""


class DataParallel:
    """The model as every rank trains it, and what a step over sharded batches needs, in one place: with a
    process group, `net` is DistributedDataParallel around `model` (it all-reduces only parameters with
    requires_grad, so frozen backbone weights cost no communication); in one process `net` is `model` and every
    method below is the one-process identity.

    Each rank holds a shard of every batch (TensorBatches: a slice that may be empty). `joins(n)`: whether a rank
    with n samples runs the micro-batch (under DDP every rank joins every backward, which carries the all-reduce);
    `pad` gives an empty shard two zero images (two: Mixup pairs samples; not zero: flash attention refuses a batch
    of 0), weighed 0 by `mean_loss`; `reduction` and `mean_loss` make the gradient DDP averages the gradient of the
    mean loss over all ranks' samples (uneven shards included); `sync(step)`: micro-batch gradients stay local
    until the one all-reduce before the optimizer step."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.ddp, self.world = is_distributed(), world_size()
        self.net = model
        if self.ddp:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=samples_subnetworks(model))
        self.reduction = "sum" if self.ddp else "mean"  # what `mean_loss` takes

    def joins(self, n_local: int) -> bool:
        """Whether a rank with `n_local` samples runs the micro-batch."""
        return n_local > 0 or self.ddp

    def pad(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The shard, or two zero images for an empty one under DDP."""
        if self.ddp and not len(x):
            return x.new_zeros((2, *x.shape[1:])), y.new_zeros((2, *y.shape[1:]))
        return x, y

    def sync(self, step: bool):
        """The context of a micro-batch's backward: gradients all-reduced only when `step` follows."""
        return self.net.no_sync() if self.ddp and not step else contextlib.nullcontext()

    def mean_loss(self, loss: torch.Tensor, n_local: int) -> tuple[torch.Tensor, float, int]:
        """(the loss to backpropagate, the micro-batch's mean loss over all ranks, its samples over all ranks)
        for `loss` of this rank's `n_local` samples (reduced with `reduction`). Every rank gets the same mean."""
        if not self.ddp:
            return loss, loss.item(), n_local
        # `loss` sums this rank's samples; scaled by world / n, DDP's average of the ranks' gradients is the
        # gradient of the mean over all ranks' samples.
        loss = loss if n_local else loss * 0.0
        total, n = all_reduce_sum(loss.detach(), n_local)
        return loss * (self.world / max(n, 1)), total / max(n, 1), n

    def total(self, count: int) -> int:
        """The sum of a per-rank count over all ranks."""
        return int(all_reduce_sum(count)[0]) if self.ddp else count
