"""Notebook 10 (bring your own corpus): the example table it starts from, and the clips a run gets wrong.

``example_table(out_dir, shared_root, demo_workdir, ...)`` writes the table notebook 10 reads: the Polish corpus
(*Emotions in Polish speech recordings*, Mięsikowska & Świsulski 2020, doi 10.34808/h46c-hb44, CC BY) when
``<shared_root>/data/real_audio/polish_emotions`` has it, else a small table of the demo corpus's English clips of
the same three classes (anger, fear, neutral; six synthetic speakers), so the notebook runs anywhere. The table
is what a user would bring: an audio path, a transcript, the corpus's own label and a speaker per row.

``held_out_predictions(result, corpus)``: the held-out rows with the audio-only model's prediction (from its stage-1 logits),
to listen to the clips it gets wrong.

Owns: ``ExampleTable``, ``example_table``, ``polish_folder``, ``held_out_predictions``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bber_utils.core.labels import CLASSES
from bber_utils.core.paths import REPO_ROOT, run_dirs
from bber_utils.corpora import prepare
from bber_utils.corpora.manifest import SPLITS, load_manifest
from bber_utils.train.metrics import masked_argmax
from bber_utils.train.runs import load_parquet

POLISH = Path("data") / "real_audio" / "polish_emotions"
POLISH_CITATION = ("Mięsikowska, M., & Świsulski, D. (2020). Emotions in Polish speech recordings [Dataset]. "
                   "Gdańsk University of Technology. doi 10.34808/h46c-hb44. CC BY.")
THREE = ("anger", "fear", "neutral")


@dataclass
class ExampleTable:
    """A table to prepare and how to read it (``bber prepare table`` options)."""

    path: Path
    corpus: str
    language: str
    columns: dict = field(default_factory=dict)
    label_map: dict = field(default_factory=dict)
    classes: tuple = THREE
    source: str = ""


def polish_folder(shared_root: str | os.PathLike | None = None) -> Path | None:
    """The Polish corpus's folder under ``shared_root`` (default ``../shared`` beside the repository), or None."""
    root = Path(shared_root).expanduser() if shared_root else REPO_ROOT.parent / "shared"
    folder = root / POLISH if (root / POLISH).is_dir() else root  # the corpus folder itself may be given
    return folder if (folder / "labels.csv").is_file() else None


def example_table(out_dir: str | os.PathLike, shared_root: str | os.PathLike | None = None,
                  demo_workdir: str | os.PathLike | None = None, demo_per_class: int = 40,
                  seed: int = 42) -> ExampleTable:
    """Write ``out_dir/table.csv`` (the Polish corpus, else the demo corpus's clips of three classes; module
    doc) and say how to read it. The demo clips come from ``demo_workdir``'s manifests when notebook 01 made them,
    else a demo corpus is built under ``out_dir/demo``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = polish_folder(shared_root)
    if folder is not None:
        labels = pd.read_csv(folder / "labels.csv")
        table = pd.DataFrame({"file": [str((folder / f).resolve()) for f in labels["file"]],
                              "word": labels["word"], "emotion": labels["emotion"], "speaker": labels["speaker"]})
        table.to_csv(out_dir / "table.csv", index=False)
        return ExampleTable(out_dir / "table.csv", "polish", "pl", {"audio_path": "file", "text": "word",
                            "label": "emotion"}, {}, THREE, f"the Polish corpus in {folder} ({POLISH_CITATION})")
    rows = _demo_rows(out_dir, demo_workdir, demo_per_class, seed)
    table = pd.DataFrame({"file": rows["audio_path"], "transcript": rows["text"], "emotion": rows["emotion_raw"],
                          "speaker": rows["speaker"]})
    table.to_csv(out_dir / "table.csv", index=False)
    return ExampleTable(out_dir / "table.csv", "demo_three", "en", {"audio_path": "file", "text": "transcript",
                        "label": "emotion"}, {}, THREE,
                        "the demo corpus's English clips of three classes (synthetic speech; the Polish corpus was "
                        "not found: give shared_root)")


def _demo_rows(out_dir: Path, demo_workdir, demo_per_class: int, seed: int) -> pd.DataFrame:
    """The demo corpus's English rows of the three classes (every split: the notebook draws its own split)."""
    manifests = run_dirs(demo_workdir).manifests if demo_workdir else None
    if manifests is None or not (manifests / "demo_en_train.parquet").exists():
        prepare("demo", out_dir / "demo", demo_per_class=demo_per_class, seed=seed, progress=False)
        manifests = run_dirs(out_dir / "demo").manifests
    rows = pd.concat([load_manifest(manifests / f"demo_en_{s}.parquet") for s in SPLITS
                      if (manifests / f"demo_en_{s}.parquet").exists()], ignore_index=True)
    return rows[rows["label"].isin(THREE)].reset_index(drop=True)


def held_out_predictions(result, corpus: str, split: str = "test", workdir=None) -> pd.DataFrame:
    """The ``split`` rows of ``corpus`` with the audio-only model's prediction and probabilities (its stage-1
    logits; the classes it may predict only): ``utt_id, speaker, text, label, predicted, p_predicted, correct,
    audio_path``."""
    metrics = result.metrics
    folder = Path(metrics["unimodal_folders"]["audio_only"])
    logits, _ = load_parquet(folder / "logits.parquet")
    allowed = [CLASSES.index(c) for c in metrics.get("classes", {}).get(corpus, CLASSES)]
    workdir = workdir or metrics["config"]["workdir"]
    rows = load_manifest(run_dirs(workdir).manifest(corpus, split)).merge(logits, on="utt_id")
    lg = rows[list(CLASSES)].to_numpy(np.float64)
    pred = masked_argmax(lg, allowed)
    z = np.exp(lg[:, allowed] - lg[:, allowed].max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    out = rows[["utt_id", "speaker", "text", "label", "audio_path"]].copy() if "speaker" in rows else \
        rows[["utt_id", "text", "label", "audio_path"]].assign(speaker="")
    out["predicted"] = [CLASSES[i] for i in pred]
    out["p_predicted"] = probs.max(axis=1).round(3)
    out["correct"] = out["predicted"] == out["label"]
    return out[["utt_id", "speaker", "text", "label", "predicted", "p_predicted", "correct", "audio_path"]]
