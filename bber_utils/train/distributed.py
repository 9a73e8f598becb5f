"""Process groups: what changes when ``train`` runs under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``).

Joining the group (nccl on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on CPU), rank/world queries, barriers,
broadcasts and sums, ``rank_zero_first`` (rank 0 writes a cache while the others wait, then they read it) and the
one place where a model is wrapped in DistributedDataParallel. Without torchrun every helper is a no-op.

Owns: ``dist_info``, ``is_main_process``, ``init_distributed``, ``barrier``, ``broadcast_from_main``, ``dist_sum``,
``rank_zero_first``, ``forward_module``, ``wrap_model``, ``unwrap_model``, ``destroy_process_group``.
Must not import: any other module of ``bber_utils.train`` (it is the bottom layer with ``config``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Callable

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module, and `bber
# --help`, stays fast.


def dist_info() -> tuple[int, int]:
    """(rank, world_size): from torch.distributed when initialised, else (0, 1)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (or without distributed training): the process that writes files and shows progress."""
    return dist_info()[0] == 0


def init_distributed(device) -> Any:
    """Join the torchrun process group when ``WORLD_SIZE > 1`` (nccl for a CUDA device, gloo otherwise).

    Returns the device this rank trains on: ``cuda:LOCAL_RANK`` for a CUDA run without an explicit index, else
    ``device`` unchanged. Without torchrun (or ``WORLD_SIZE=1``) nothing happens. Collectives time out after
    ``BBER_DIST_TIMEOUT_S`` seconds (default 2 h: rank 0 may be extracting features while the others wait).
    """
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        for key in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(f"WORLD_SIZE={world} but {key} is not set: start distributed runs with "
                                   f"torchrun --nproc_per_node N ...")
        # Long enough for rank 0 to extract missing features while the others wait at a barrier.
        timeout = datetime.timedelta(seconds=float(os.environ.get("BBER_DIST_TIMEOUT_S", 2 * 3600)))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return device


def barrier() -> None:
    """Wait for every rank (a no-op without distributed training)."""
    if dist_info()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; small objects only). Unchanged without distributed training."""
    if dist_info()[1] == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def dist_sum(t):
    """``t`` summed over all ranks (a copy; unchanged without distributed training)."""
    if dist_info()[1] == 1:
        return t
    import torch.distributed as dist

    t = t.detach().clone()
    dist.all_reduce(t)
    return t


@contextlib.contextmanager
def rank_zero_first():
    """Rank 0 runs the block first (it writes the caches); the other ranks run it after, reading them."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def forward_module(model, forward: Callable):
    """``model`` with ``forward(model, batch)`` as its ``forward``: what DDP wraps, so that every training
    forward (also ``fuse`` on cached encodings) goes through DDP and its gradients are all-reduced."""
    import torch

    class ForwardModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return forward(self.model, batch)

    return ForwardModule()


def wrap_model(model, device):
    """The one place where the model is wrapped for training (DistributedDataParallel when initialised)."""
    _, world = dist_info()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    return model


def unwrap_model(model):
    return getattr(model, "module", model)


def destroy_process_group() -> None:
    """Leave the torchrun process group (if ``train`` joined one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
