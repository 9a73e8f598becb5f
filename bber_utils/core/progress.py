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

__all__ = ["tqdm"]
