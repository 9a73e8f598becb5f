"""Child processes that end with their parent: ``die_with_parent`` (Linux ``prctl(PR_SET_PDEATHSIG)``), for the
processes a run forks or spawns (a study's training server's runs, stage 1's second process), so that a killed
parent does not leave them writing into its folders."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent dies (Linux); elsewhere nothing changes."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux / no prctl: it may outlive its parent, as before
        pass
