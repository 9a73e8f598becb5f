"""``text_context: k``: only earlier utterances of the same dialogue and split, never later ones."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bber_utils.features.context import ContextTextStore, with_text_context
from bber_utils.corpora.dialogues import context_map, split_context_map


def _rows(split, dialogues, n_utt, corpus="c"):
    return pd.DataFrame([{"utt_id": f"{corpus}-{split}-dia{d}_utt{u}", "corpus": corpus, "split": split,
                          "native_id": f"dia{d}_utt{u}", "source": "original"}
                         for d in dialogues for u in range(n_utt)])


def test_context_only_earlier_same_dialogue():
    df = _rows("train", [0, 1], 5).sample(frac=1.0, random_state=0)  # order of rows must not matter
    ctx = context_map(df, 2)
    assert ctx["c-train-dia0_utt0"] == []
    assert ctx["c-train-dia0_utt1"] == ["c-train-dia0_utt0"]
    assert ctx["c-train-dia0_utt4"] == ["c-train-dia0_utt2", "c-train-dia0_utt3"]
    for u, prev in ctx.items():
        d, n = u.split("-")[-1].split("_")
        for p in prev:
            pd_, pn = p.split("-")[-1].split("_")
            assert pd_ == d and int(pn[3:]) < int(n[3:])  # never a later utterance, never another dialogue


def test_context_never_crosses_splits():
    # the same dialogue number in train and dev (as when dev is drawn from train): separate dialogues
    splits = {"train": _rows("train", [7], 3), "dev": _rows("dev", [7], 3)}
    ctx = split_context_map(splits, 4)
    assert ctx["c-dev-dia7_utt2"] == ["c-dev-dia7_utt0", "c-dev-dia7_utt1"]
    assert all(p.split("-")[1] == u.split("-")[1] for u, prev in ctx.items() for p in prev)
    # and one table holding both splits still keeps them apart
    both = context_map(pd.concat(splits.values()), 4)
    assert both["c-dev-dia7_utt0"] == [] and both["c-dev-dia7_utt2"] == ["c-dev-dia7_utt0", "c-dev-dia7_utt1"]
    assert all(p.split("-")[1] == u.split("-")[1] for u, prev in both.items() for p in prev)


def test_dialogue_columns_and_synthetic_rows():
    df = pd.DataFrame({"utt_id": ["a", "b", "c", "d"], "corpus": "t", "split": "train",
                       "dialogue_id": ["x", "x", "x", ""], "utterance_id": ["2", "10", "1", "3"],
                       "source": ["original", "original", "tug", "original"]})
    ctx = context_map(df, 3)
    assert ctx == {"a": [], "b": ["a"]}  # numeric order (10 after 2); tug and dialogue-less rows: no context


def test_context_store_features():
    store = {"u0": np.ones((2, 3), np.float32), "u1": 2 * np.ones((1, 3), np.float32)}

    class S(dict):
        dim, path = 3, "feat"

    s = ContextTextStore(S(store), {"u1": ["u0"]}, 1)
    x = s["u1"]
    assert x.shape == (3, 4) and s.dim == 4
    assert x[:, -1].tolist() == [0.0, 0.0, 1.0] and x[-1, 0] == 2.0
    assert with_text_context(S(store), {}, 0) is not None and isinstance(with_text_context(S(store), {}, 0), S)


def test_context_mode_mean_gives_one_step_per_previous_utterance():
    import pytest

    from bber_utils.train import TrainConfig

    store = {"u0": np.array([[1, 1, 1], [3, 3, 3]], np.float32), "u1": np.array([[5, 5, 5]], np.float32),
             "u2": 2 * np.ones((2, 3), np.float32)}

    class S(dict):
        dim, path = 3, "feat"

    steps = ContextTextStore(S(store), {"u2": ["u0", "u1"]}, 2)
    mean = ContextTextStore(S(store), {"u2": ["u0", "u1"]}, 2, mode="mean")
    assert steps["u2"].shape == (5, 4)
    x = mean["u2"]
    assert x.shape == (4, 4) and x[:, -1].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert x[0, :3].tolist() == [2.0, 2.0, 2.0] and x[1, 0] == 5.0  # u0's mean, then u1, then u2's own steps
    assert str(mean.path) != str(steps.path)  # distinct unimodal cache keys
    with pytest.raises(ValueError, match="text_context_mode"):
        ContextTextStore(S(store), {}, 1, mode="last")
    with pytest.raises(ValueError, match="text_context_mode"):
        TrainConfig.from_dict({"text_context_mode": "last"})
    assert "text_context_mode" not in TrainConfig.from_dict({}).identity()
    assert TrainConfig.from_dict({"text_context_mode": "mean"}).identity()["text_context_mode"] == "mean"


def test_context_turns_are_flagged_by_whether_their_speaker_is_the_utterances():
    """``text_context_speaker``: one more column, 1.0 on the steps of turns by the utterance's own speaker (and
    on its own steps), 0.0 on the others' turns; a distinct cache key; every split needs no speaker column but
    one must exist somewhere."""
    import pytest

    store = {"u0": np.ones((2, 3), np.float32), "u1": 2 * np.ones((1, 3), np.float32),
             "u2": 3 * np.ones((2, 3), np.float32)}

    class S(dict):
        dim, path = 3, "feat"

    speakers = {"u0": "Ross", "u1": "Rachel", "u2": "Ross"}
    for mode, flags in (("steps", [1, 1, 0, 1, 1]), ("mean", [1, 0, 1, 1])):
        s = ContextTextStore(S(store), {"u2": ["u0", "u1"]}, 2, mode=mode, speakers=speakers)
        x = s["u2"]
        assert s.dim == 5 and x.shape == (len(flags), 5)
        assert x[:, -1].tolist() == flags  # same speaker as u2
        assert x[:, -2].tolist() == [0.0] * (len(flags) - 2) + [1.0, 1.0]  # own steps
        assert str(s.path).endswith("-speaker")
    df = _rows("train", [0], 3).assign(speaker=["Ross", "Rachel", "Ross"])
    ctx = with_text_context(S({u: np.ones((1, 3), np.float32) for u in df["utt_id"]}), {"train": df}, 2,
                            "mean", speaker=True)
    assert ctx[df["utt_id"][2]][:, -1].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="needs the manifests' speaker column"):
        with_text_context(S(store), {"train": _rows("train", [0], 2)}, 1, speaker=True)
