"""Stage 1 on two cores: the text-only encoder trains in a second process while this one trains the audio-only
encoder; this process then reads the text encoder from stage 1's cache (``unimodal``), exactly as a later run of
the same seed does. The numbers are those of training both here one after the other: each modality seeds its own
training (``loop.seed_everything``), the second process gets the same inputs, the same torch thread count and the
pinned CPU environment (``core.cpu``, inherited), and the cache holds its exact weights and logits.

Used when ``parallel_stage1`` is on (a ``control`` key), the run is on the CPU with one torch thread, not
distributed, this machine has a second core, both modalities are to be trained (neither is cached), and stage 1
is long enough to pay for starting a process (``MIN_SAMPLE_EPOCHS``). A second
process that fails leaves a warning line, and this process trains the text encoder itself (so the run's own
error, if it is one, is raised here, where it belongs).

Owns: ``train_stage1``. Imports from this package: ``unimodal``, ``distributed``, ``config``.
Must not import: ``fusion``, ``stages``, ``cli``. Calls ``unimodal.train_unimodal`` through its module.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import types
import warnings
from typing import Any

from bber_utils.core.processes import die_with_parent
from bber_utils.train import unimodal
from bber_utils.train.config import TrainConfig
from bber_utils.train.distributed import dist_info

# Heavy libraries (torch) are imported inside the functions that use them, so that importing this module stays fast.

# Starting the second process costs about 2 CPU seconds (imports); below this many train rows x stage-1 epochs a
# stage 1 takes less than that (the demo corpus: 560 rows x 60 epochs; the trainer's unit tests: under 100).
MIN_SAMPLE_EPOCHS = 5_000


def train_stage1(tc1: TrainConfig, stores: tuple, splits: dict, soft_table: dict, weights, device, need_oof: bool,
                 dims: tuple[int, int], oof_train, space, parallel: bool = True) -> dict[str, "unimodal.UnimodalRun"]:
    """``{modality: UnimodalRun}`` for each store that is not None (audio first, then text), the text encoder
    trained in a second process when ``_side_process_helps``. Arguments as ``unimodal.train_unimodal``."""
    args = dict(splits=splits, soft_table=soft_table, weights=weights, device=device, need_oof=need_oof,
                dims=dims, oof_train=oof_train, space=space)
    side = None
    if parallel and _side_process_helps(tc1, stores, device, splits, soft_table, space):
        side = _start_text_process(tc1, stores[1], args)
    out = {}
    try:
        if stores[0] is not None:
            out["audio"] = _train(tc1, "audio", stores[0], args)
    except BaseException:
        _stop(side)
        raise
    if side is not None:
        _join(side)
    out["text"] = _train(tc1, "text", stores[1], args)
    return out


def _train(tc1: TrainConfig, modality: str, store, args: dict):
    return unimodal.train_unimodal(tc1, modality, store, **args)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _side_process_helps(tc1: TrainConfig, stores: tuple, device, splits: dict, soft_table: dict, space) -> bool:
    """Both modalities to train here, on a CPU with a core to spare, one torch thread, no process group, and
    neither found in the cache (a cached one costs nothing to read)."""
    import torch

    if stores[0] is None or stores[1] is None or getattr(device, "type", str(device)) != "cpu":
        return False
    if dist_info()[1] > 1 or torch.get_num_threads() != 1 or _cores() < 2 or tc1.interrupt_after:
        return False
    if len(splits["train"]) * (tc1.unimodal_epochs or tc1.epochs) < MIN_SAMPLE_EPOCHS:
        return False
    return not any(unimodal.is_cached(tc1, m, s, splits, soft_table, space)
                   for m, s in (("audio", stores[0]), ("text", stores[1])))


def _start_text_process(tc1: TrainConfig, store, args: dict):
    """The text encoder's stage 1 in a spawned process (nothing of this one's state but what it is given)."""
    ctx = multiprocessing.get_context("spawn")
    side = ctx.Process(target=_text_stage1, args=(tc1, store, args), name="bber-stage1-text", daemon=True)
    main = sys.modules["__main__"]
    # A spawned child imports the parent's main script again (multiprocessing's "safe importing of the main
    # module"): a user's script that calls train() at its top level would run again there. The child needs only
    # bber_utils, so it is started as if there were no main script.
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        side.start()
    except Exception as exc:  # noqa: BLE001 - e.g. a store that cannot be pickled: train it here instead
        warnings.warn(f"stage 1: no second process ({type(exc).__name__}: {exc}); training the text-only encoder "
                      f"here", stacklevel=3)
        return None
    finally:
        sys.modules["__main__"] = main
    print("stage 1: the text-only encoder trains in a second process beside the audio-only one", flush=True)
    return side


def _text_stage1(tc1: TrainConfig, store, args: dict) -> None:
    """Entry point of the second process: the same thread count and determinism settings as ``train``."""
    import torch

    die_with_parent()  # a run killed on Ctrl-C takes its stage-1 process with it
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    quiet = TrainConfig.from_dict({**tc1.to_dict(), "progress": False})
    _train(quiet, "text", store, args)


def _join(side) -> None:
    """Wait for the second process; a failure is one warning line (this process then trains the text encoder)."""
    try:
        side.join()
    except BaseException:
        _stop(side)
        raise
    if side.exitcode != 0:
        warnings.warn(f"stage 1: the text-only encoder's second process exited with status {side.exitcode}; "
                      f"training it here instead", stacklevel=3)


def _stop(side: Any) -> None:
    """Terminate the second process (killed after 10 s) and wait for it; None is ignored."""
    if side is None or not side.is_alive():
        return
    side.terminate()
    side.join(10)
    if side.is_alive():
        side.kill()
        side.join()
