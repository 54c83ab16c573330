"""Data-parallel training on PyTorch's distributed engine, as launched by ``torchrun``.

``torchrun --nproc-per-node N ctapipe-train-gammaphysnet …`` starts N copies of the tool with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment; ``process_group`` turns that
into a process group (nccl between GPUs, gloo on CPU). Without those variables every helper here
is a no-op for a single process, so the trainer has one code path for both cases.
"""
import logging
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = ["launched_by_torchrun", "launch_rank", "local_rank", "rank", "world_size", "is_main_process",
           "process_group", "wrap", "sum_over_ranks", "average_gradients", "broadcast_object",
           "barrier"]

log = logging.getLogger(__name__)


def launched_by_torchrun():
    """Whether this process is one of several started by torchrun (or another launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def launch_rank():
    """Rank given to this process by torchrun (0 when not launched so), with or without a group."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def local_rank():
    """Index of this process on its node (its GPU under torchrun); 0 when not launched so."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _active():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if _active() else 0


def world_size():
    return dist.get_world_size() if _active() else 1


def is_main_process():
    """Rank 0 alone writes checkpoints, metrics, the model and the logs."""
    return rank() == 0


@contextmanager
def process_group(device):
    """Join the torchrun process group for the life of the block (nothing to do otherwise).

    The group is destroyed on leaving the block, also after an error, so that a failing rank exits
    at once and torchrun stops the others.
    """
    if not launched_by_torchrun() or _active():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d (%s backend, %s)", rank(), world_size(), backend, device)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(network, device):
    """The network in ``DistributedDataParallel`` when there are several processes, else itself."""
    if world_size() == 1:
        return network
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)


def sum_over_ranks(values):
    """Element-wise sum of a float64 tensor over all processes (a copy when alone)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    if world_size() == 1:
        return values.clone()
    # gloo and nccl both reduce a tensor on the process group's device
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    values = values.to(device)
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def average_gradients(module):
    """Average the gradients of a module that is not in DistributedDataParallel over the ranks."""
    if world_size() == 1:
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= world_size()


def broadcast_object(obj, source=0):
    """``obj`` of rank ``source`` on every rank (any picklable object)."""
    if world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def barrier():
    if world_size() > 1:
        dist.barrier()
