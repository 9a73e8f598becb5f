"""The skip report: one row per utterance left out of a manifest, with the reason (``manifests/skips.csv``)."""

from __future__ import annotations

import pandas as pd

SKIP_COLUMNS = ["corpus", "split", "utt_id", "path", "reason"]


def skip_row(corpus: str, split: str, utt_id: str, path: object, reason: str) -> dict:
    """One skipped utterance: where it came from and why it was left out."""
    return {"corpus": corpus, "split": split, "utt_id": utt_id, "path": "" if path is None else str(path),
            "reason": reason}


def skips_frame(rows: list[dict]):
    """The skip rows as a table with ``SKIP_COLUMNS`` (empty table when nothing was skipped)."""

    return pd.DataFrame(rows, columns=SKIP_COLUMNS).astype(str)
