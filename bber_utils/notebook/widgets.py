"""Interactive cells for JupyterLab (ipywidgets). Each builder returns a widget box already showing its default
state, so a notebook executed unattended (papermill, ``bber reproduce``) stores a meaningful output too.

- ``inference_explorer(predictor, clips)``: choose a clip or upload a wav, edit the transcript, and see the audio-only,
  text-only and fused probabilities update (notebook 09).
- ``ratio_explorer(preview, ratio)``: a ratio slider and the training mix it gives (notebooks 03 and 04);
  ``sds_mix`` / ``tug_mix`` are the two previews.

Every widget carries a CSS class (``bber-…``) so that a browser test can find it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bber_utils.augment.sds import plan_sds
from bber_utils.augment.tug import mix_plan
from bber_utils.core.labels import CLASSES
from bber_utils.predict.inputs import predictions_table

# Heavy libraries (IPython, ipywidgets, matplotlib) are imported inside the functions that use them, so that importing
# this module, and `bber --help`, stays fast.


# ------------------------------------------------------------------------------------------------ inference

def _probability_figure(row, truth: str | None):
    """Grouped bars of one prediction row: audio-only, text-only, fused over the seven classes."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    x = np.arange(len(CLASSES))
    for j, (src, colour) in enumerate((("audio", "tab:blue"), ("text", "tab:orange"), ("fused", "tab:green"))):
        vals = [row.get(f"{src}_{c}") for c in CLASSES]
        if all(v is not None and v == v for v in vals):
            ax.bar(x + (j - 1) * 0.27, vals, 0.27, label=src, color=colour)
    ax.set_xticks(x, CLASSES, rotation=30)
    ax.set(ylim=(0, 1), ylabel="probability", xlabel="emotion class",
           title=f"predicted: {row.get('label')}" + (f" · true: {truth}" if truth else ""))
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def inference_explorer(predictor, clips, max_choices: int = 20):
    """Dropdown of clips (``clips``: DataFrame with ``audio_path``, ``text``, optional ``label``), a wav upload,
    an editable transcript and a Predict button; the output shows the probabilities of the three views.

    Changing the clip fills its transcript and predicts; editing the transcript and pressing Predict re-scores the
    same audio with the new text (the audio-only bars stay, the text-only and fused ones move).
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import Audio, display

    clips = clips.head(max_choices).reset_index(drop=True)
    options = [(f"{Path(str(r.audio_path)).name} ({getattr(r, 'label', '?')})", i) for i, r in clips.iterrows()]
    choose = w.Dropdown(options=options, description="clip", layout=w.Layout(width="60%"))
    upload = w.FileUpload(accept=".wav,.flac,.mp3,.ogg", multiple=False, description="upload audio")
    text = w.Textarea(description="transcript", layout=w.Layout(width="90%", height="60px"))
    button = w.Button(description="Predict", button_style="primary")
    status = w.HTML()
    out = w.Output()
    for widget, css in ((choose, "bber-clip"), (upload, "bber-upload"), (text, "bber-transcript"),
                        (button, "bber-predict"), (status, "bber-status"), (out, "bber-probabilities")):
        widget.add_class(css)
    state: dict = {"path": None, "truth": None}

    def select(index: int) -> None:
        row = clips.iloc[index]
        state.update(path=str(row["audio_path"]), truth=row.get("label"))
        text.value = str(row.get("text") or "")

    def predict(*_) -> None:
        if state["path"] is None:
            return
        table = predictions_table(predictor.predict([state["path"]], [text.value or None]))
        row = table.iloc[0].to_dict()
        out.clear_output(wait=True)
        with out:
            if row.get("error"):
                print(f"{Path(state['path']).name}: {row['error']}")
                return
            display(Audio(filename=state["path"]))
            fig = _probability_figure(row, state["truth"])
            display(fig)
            plt.close(fig)
            probs = pd.DataFrame({v: [row[f"{v}_{c}"] for c in CLASSES] for v in ("audio", "text", "fused")},
                                 index=list(CLASSES))
            display(probs.round(3).T)
        status.value = (f"<b>{row['label']}</b> (fused) for <code>{Path(state['path']).name}</code>"
                        + (f", true label <b>{state['truth']}</b>" if state["truth"] else ""))

    def on_choose(change) -> None:
        select(change["new"])
        predict()

    def on_upload(change) -> None:
        files = change["new"]
        if not files:
            return
        item = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        name = item.get("name", "upload.wav") if isinstance(item, dict) else getattr(item, "name", "upload.wav")
        content = item["content"] if isinstance(item, dict) else item.content
        folder = Path(tempfile.mkdtemp(prefix="bber-upload-"))
        path = folder / os.path.basename(name)
        path.write_bytes(bytes(content))
        state.update(path=str(path), truth=None)
        text.value = ""
        predict()

    choose.observe(on_choose, names="value")
    upload.observe(on_upload, names="value")
    button.on_click(predict)
    if len(clips):
        select(0)
        predict()
    box = w.VBox([w.HBox([choose, upload]), text, w.HBox([button, status]), out])
    box.add_class("bber-inference-explorer")
    return box


# ------------------------------------------------------------------------------------------------ training mix

def tug_mix(train, synthetic, mode: str = "per_class") -> Callable[[float], "object"]:
    """``ratio -> table``: train utterances per corpus and class, original and TUG-added (``mix_plan``)."""

    def preview(ratio: float):
        plan = mix_plan(train, synthetic, ratio, mode)
        table = plan.pivot_table(index="corpus", columns="label", values=["n_train", "added"], aggfunc="sum")
        out = pd.concat({"original": table["n_train"], "TUG added": table["added"]}, names=["rows"])
        out = out.reindex(columns=list(CLASSES)).fillna(0).astype(int)
        out["total"] = out.sum(axis=1)
        return out

    return preview


def sds_mix(train, seed: int = 42, target_seconds: float = 4.0, max_seconds: float = 8.0):
    """``ratio -> table``: train utterances per corpus and class, original and SDS-merged (``plan_sds``, no audio)."""

    def preview(ratio: float):
        parts = {}
        for corpus, df in train.groupby("corpus", sort=True):
            df = df.reset_index(drop=True)
            plan = plan_sds(df, ratio, seed, target_seconds, max_seconds)
            merged = df.iloc[[m[0] for m in plan.merges]]["label"].value_counts()
            parts[(corpus, "original")] = df["label"].value_counts()
            parts[(corpus, "SDS added")] = merged
        out = pd.DataFrame(parts).T.reindex(columns=list(CLASSES)).fillna(0).astype(int)
        out["total"] = out.sum(axis=1)
        return out

    return preview


def ratio_explorer(preview: Callable[[float], object], ratio: float = 0.5, maximum: float = 1.0,
                   step: float = 0.1, description: str = "ratio"):
    """A slider for an augmentation ratio and the training mix ``preview(ratio)`` gives (shown at once)."""
    import ipywidgets as w
    from IPython.display import display

    slider = w.FloatSlider(value=ratio, min=0.0, max=maximum, step=step, description=description,
                           continuous_update=False, readout_format=".2f")
    out = w.Output()
    slider.add_class("bber-ratio")
    out.add_class("bber-mix")

    def show(*_) -> None:
        out.clear_output(wait=True)
        with out:
            display(preview(slider.value))

    slider.observe(show, names="value")
    show()
    box = w.VBox([slider, out])
    box.add_class("bber-ratio-explorer")
    return box
