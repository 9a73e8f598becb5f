"""Shared fixtures. ``smoke_run`` executes every notebook once, on the smoke profile, for the whole session."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")  # same maths for a seed, whatever ran before


@pytest.fixture(autouse=True, scope="session")
def _sigint_raises_keyboard_interrupt():
    """A test run started in the background (``cmd &`` without job control) inherits SIGINT ignored, and Python
    then installs no handler: the Ctrl-C tests need SIGINT to raise KeyboardInterrupt (children they start reset
    it with ``preexec_fn``)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the checkout (reference material); skips when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"reference material not available: {SHARED} is absent")
    return SHARED


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """Run notebooks 01–09 on configs/smoke.yaml into a fresh work folder; yields (RunDirs, runs)."""
    from bber_utils.paths import run_dirs
    from bber_utils.pipeline import reproduce

    workdir = tmp_path_factory.mktemp("smoke_run")
    runs = reproduce("smoke", workdir=workdir, log=lambda msg: print(msg, flush=True))
    return run_dirs(workdir), runs
