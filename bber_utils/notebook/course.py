"""What every course notebook sets up in its imports cell: ``setup(workdir)`` makes pandas show tables whole (every
column, no cell cut with "…") and returns the figure tag (" — synthetic demo" on the built-in demo corpus, see
``plots.synthetic_tag``) that each figure's title carries."""

from __future__ import annotations

import pandas as pd

from bber_utils.notebook import plots

TABLE_OPTIONS = {"display.max_colwidth": None, "display.max_columns": None, "display.width": 250,
                 "display.max_rows": 120, "display.min_rows": 120}


def setup(workdir) -> str:
    """Readable tables for this kernel; -> the figure tag of ``workdir``'s corpora."""
    for key, value in TABLE_OPTIONS.items():
        pd.set_option(key, value)
    return plots.synthetic_tag(workdir)
