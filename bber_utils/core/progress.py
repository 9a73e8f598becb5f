"""The progress bar class for the package: ``from bber_utils.core.progress import tqdm``.

``tqdm.auto`` picks the widget bar inside any IPython kernel. A kernel run by papermill (``bber reproduce``,
the notebook tests) has no widget frontend: the saved notebook keeps the widget's first state, a bar stuck at
0 %. ``bber reproduce`` therefore sets ``BBER_PROGRESS=text`` for its kernels, and this module then gives the
plain text bar (``tqdm.std``), whose last state - 100 % with the final counts - is what the executed notebook
stores (nbclient keeps only the last carriage-return frame). Interactive JupyterLab keeps the widget bars.
"""

from __future__ import annotations

import os

if os.environ.get("BBER_PROGRESS", "auto").lower() == "text":
    from tqdm.std import tqdm
else:
    from tqdm.auto import tqdm


def finish_early(bar, description: str | None = None) -> None:
    """A loop that stops before ``bar.total`` (early stopping): make the count reached the total, so the bar
    closes at its real end - "100% 18/18", and a notebook widget green at its end rather than red at 60 % -
    and, given ``description``, say why (e.g. "biformer (early stop at epoch 18 of 30)")."""
    if bar.disable:
        return
    bar.total = bar.n
    container = getattr(bar, "container", None)  # tqdm.notebook's widget keeps its own maximum
    if container is not None:
        container.children[1].max = bar.n
    if description:
        bar.set_description(description, refresh=False)
    bar.refresh()


__all__ = ["finish_early", "tqdm"]
