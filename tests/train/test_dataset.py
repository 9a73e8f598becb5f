"""bber_utils.train: the dataset, collate, samplers, soft targets and the soft-target loss (dataset, samplers, loss)."""

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bber_utils.train.samplers import BalancedCorpusSampler, ShuffleSampler
from bber_utils.train.dataset import (CachedEncodingDataset, EmotionDataset, collate, pool_frames, soft_label_table,
                                      split_encoded)
from bber_utils.train.loss import class_weights, soft_cross_entropy
from bber_utils.core.labels import CLASSES

from tests.conftest import SHARED


def _manifest(n, corpus="demo_en", labels=None):
    labels = labels or [CLASSES[i % 7] for i in range(n)]
    return pd.DataFrame({"utt_id": [f"{corpus}-train-{i}" for i in range(n)], "corpus": corpus, "label": labels})


def _stores(ids, da=3, dt=2, seed=0):
    rng = np.random.default_rng(seed)
    a = {u: rng.standard_normal((rng.integers(1, 9), da)).astype(np.float32) for u in ids}
    t = {u: rng.standard_normal((rng.integers(1, 6), dt)).astype(np.float32) for u in ids}
    return a, t


def _soft(ids, peak=2):
    p = np.full((len(ids), 7), 0.05)
    p[:, peak] = 0.7
    return pd.DataFrame({"utt_id": ids, **{c: p[:, i] for i, c in enumerate(CLASSES)}})


def test_items_and_collate_pad_right_with_masks():
    m = _manifest(5)
    a, t = _stores(m.utt_id)
    a[m.utt_id[0]] = np.ones((1, 3), np.float32)  # a single frame works
    ds = EmotionDataset(m, a, t)
    batch = collate([ds[i] for i in range(5)])
    la = [len(a[u]) for u in m.utt_id]
    assert batch["audio"].shape == (5, max(la), 3)
    assert batch["audio_mask"].dtype == torch.bool
    assert batch["audio_mask"].sum(1).tolist() == la
    assert batch["text_mask"].sum(1).tolist() == [len(t[u]) for u in m.utt_id]
    assert torch.equal(batch["audio"][0, 0], torch.ones(3)) and batch["audio"][0, 1:].abs().sum() == 0
    assert batch["label"].tolist() == [0, 1, 2, 3, 4]
    assert torch.allclose(batch["target"], torch.eye(7)[:5])
    assert batch["utt_id"] == list(m.utt_id)


def test_missing_or_empty_features_are_skipped_and_counted():
    m = _manifest(6)
    a, t = _stores(m.utt_id)
    del a[m.utt_id[1]]
    t[m.utt_id[4]] = np.zeros((0, 2), np.float32)
    with pytest.warns(UserWarning, match="skipped 2 of 6"):
        ds = EmotionDataset(m, a, t, name="train")
    assert len(ds) == 4
    assert ds.skipped == {"no audio features": 1, "empty text features": 1}


def test_label_smoothing_is_uniform():
    m = _manifest(3)
    ds = EmotionDataset(m, *_stores(m.utt_id), label_smoothing=0.1)
    tgt = ds[2]["target"]
    assert tgt.sum() == pytest.approx(1.0)
    assert tgt[2] == pytest.approx(0.9 + 0.1 / 7)
    assert tgt[0] == pytest.approx(0.1 / 7)


def test_soft_targets_fraction_seeded_per_epoch_and_missing_counted():
    m = _manifest(400)
    ids = list(m.utt_id)
    soft = _soft(ids[:300])  # the last 100 have no soft label
    ds = EmotionDataset(m, *_stores(ids), soft_labels=soft, ls_llm_p=0.5, seed=3)
    assert ds.soft_used == 300 and ds.soft_missing == 100
    ds.set_epoch(1)
    use1 = ds.use_soft.copy()
    assert not use1[300:].any()  # no soft label -> one-hot
    assert 0.4 < use1[:300].mean() < 0.6
    for i in np.flatnonzero(use1)[:5]:
        assert np.allclose(ds[i]["target"], soft.iloc[i][list(CLASSES)].to_numpy(float))
        assert ds[i]["has_soft"]
    for i in np.flatnonzero(~use1)[:5]:
        assert ds[i]["target"][ds.labels[i]] == 1.0
    ds.set_epoch(2)
    assert not np.array_equal(ds.use_soft, use1)  # a new draw per epoch
    ds.set_epoch(1)
    assert np.array_equal(ds.use_soft, use1)  # ... fixed for an epoch (resume-safe)
    ds_other = EmotionDataset(m, *_stores(ids), soft_labels=soft, ls_llm_p=0.5, seed=3)
    ds_other.set_epoch(1)
    assert np.array_equal(ds_other.use_soft, use1)


def test_soft_label_table_repairs_artefacts_and_rejects_non_distributions():
    ok = _soft(["a"])
    ok.loc[0, "fear"] = -1e-5
    ok.loc[0, "neutral"] = 0.1
    table = soft_label_table(ok)
    assert table["a"].min() >= 0 and table["a"].sum() == pytest.approx(1.0)
    bad = _soft(["a", "b"])
    bad.loc[1, "happy"] = 0.9
    with pytest.raises(ValueError, match="row 1 .*'b'"):
        soft_label_table(bad)


def test_reference_soft_label_file_loads_if_available():
    path = SHARED / "data" / "reference_llm_labels" / "Qwen3-4B_emotions_resd.csv"
    if not path.exists():
        pytest.skip(f"reference soft labels not available at {path}")
    df = pd.read_csv(path).rename(columns={"video_name": "utt_id"})
    table = soft_label_table(df)
    assert len(table) == len(df)
    assert all(abs(v.sum() - 1) < 1e-5 and v.min() >= 0 for v in table.values())


def test_loss_uses_the_distribution_not_its_argmax():
    # Two targets with the same argmax but different distributions must give different losses and gradients.
    logits = torch.zeros(1, 7, requires_grad=True)
    sharp = torch.eye(7)[[0]]
    soft = torch.tensor([[0.5, 0.4, 0.1, 0, 0, 0, 0]])
    l_sharp, l_soft = soft_cross_entropy(logits, sharp), soft_cross_entropy(logits, soft)
    assert l_sharp.item() == pytest.approx(np.log(7), rel=1e-5)
    assert l_soft.item() == pytest.approx(np.log(7), rel=1e-5)  # uniform prediction: same
    logits2 = torch.tensor([[2.0, 1.5, 0, 0, 0, 0, 0]])
    assert soft_cross_entropy(logits2, soft).item() != pytest.approx(soft_cross_entropy(logits2, sharp).item())
    (g,) = torch.autograd.grad(soft_cross_entropy(logits, soft), logits)
    assert g[0, 1] < 0  # pushes class 1 up, which an argmax target would push down
    # the minimum of the soft loss is at the target distribution
    opt_logits = torch.zeros(1, 7, requires_grad=True)
    opt = torch.optim.SGD([opt_logits], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        soft_cross_entropy(opt_logits, soft).backward()
        opt.step()
    assert torch.allclose(torch.softmax(opt_logits, -1)[0, :3], soft[0, :3], atol=0.02)


def test_weighted_soft_loss_equals_weighted_cross_entropy_for_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(6, 7)
    y = torch.tensor([0, 1, 1, 3, 6, 6])
    w = torch.rand(7) + 0.5
    ref = torch.nn.functional.cross_entropy(logits, y, weight=w)
    assert soft_cross_entropy(logits, torch.eye(7)[y], w, y).item() == pytest.approx(ref.item(), rel=1e-5)
    with pytest.raises(ValueError, match="need the true labels"):
        soft_cross_entropy(logits, torch.eye(7)[y], w)


# MELD-train-like balanced weights (neutral ≈ 0.3, disgust and fear ≈ 5.3), from the official class counts.
MELD_COUNTS = {"neutral": 4710, "happy": 1743, "sad": 683, "anger": 1109, "surprise": 1205, "disgust": 271,
               "fear": 268}


def _meld_weights():
    y = np.concatenate([np.full(n, CLASSES.index(c)) for c, n in MELD_COUNTS.items()])
    return torch.as_tensor(class_weights(y))


def test_class_weights_do_not_move_the_optimum_of_a_soft_target():
    """The issue's example: neutral 0.55 (true), fear 0.05. Weighting the target (w ⊙ q) put the optimum on
    fear; weighting the sample keeps it at q, whatever the weights."""
    w = _meld_weights()
    q = torch.zeros(1, 7)
    q[0, CLASSES.index("neutral")], q[0, CLASSES.index("fear")] = 0.55, 0.05
    q[0, [CLASSES.index(c) for c in ("happy", "sad", "anger", "surprise", "disgust")]] = 0.08
    y = torch.tensor([CLASSES.index("neutral")])
    logits = torch.zeros(1, 7, requires_grad=True)
    opt = torch.optim.LBFGS([logits], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = soft_cross_entropy(logits, q, w, y)
        loss.backward()
        return loss

    opt.step(closure)
    p = torch.softmax(logits.detach(), -1)
    assert int(p.argmax()) == CLASSES.index("neutral")
    assert torch.allclose(p, q, atol=1e-3)


def test_per_sample_weights_add_up_over_ranks_and_ignore_padding():
    """The distributed trainer divides each rank's numerator by the global denominator: the parts of a batch
    split in two must give the whole batch's loss, and a padding row (zero target) must add nothing."""
    from bber_utils.train.loss import soft_cross_entropy_parts

    torch.manual_seed(1)
    logits, w = torch.randn(6, 7), _meld_weights()
    q = torch.softmax(torch.randn(6, 7), -1)
    y = q.argmax(-1)
    whole = soft_cross_entropy(logits, q, w, y)
    (n1, d1), (n2, d2) = (soft_cross_entropy_parts(logits[s], q[s], w, y[s]) for s in (slice(0, 4), slice(4, 6)))
    assert ((n1 + n2) / (d1 + d2)).item() == pytest.approx(whole.item(), rel=1e-6)
    padded = soft_cross_entropy(torch.cat([logits, torch.randn(1, 7)]), torch.cat([q, torch.zeros(1, 7)]), w,
                                torch.cat([y, torch.tensor([6])]))
    assert padded.item() == pytest.approx(whole.item(), rel=1e-6)
    expected = (w[y] * -(q * torch.log_softmax(logits, -1)).sum(-1)).sum() / w[y].sum()
    assert whole.item() == pytest.approx(expected.item(), rel=1e-6)


from hypothesis import given, settings, strategies as st  # noqa: E402


@st.composite
def _valid_soft_targets(draw):
    """(q (7,), y): a distribution whose true class y is strictly highest (by >= 0.01), as the validator
    guarantees."""
    y = draw(st.integers(0, 6))
    raw = draw(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=7, max_size=7))
    q = np.asarray(raw, dtype=np.float64)
    q[y] = q.max() + draw(st.floats(0.02, 1.0))
    return q / q.sum(), y


@settings(max_examples=200, deadline=None)
@given(_valid_soft_targets())
def test_loss_optimum_keeps_the_target_argmax_for_any_valid_soft_target(example):
    """The loss (per-sample weight w[y]) is minimised at p = q for every valid soft target under MELD-like
    weights: its gradient vanishes at logits = log q, and the loss is convex in the logits, so the optimum's
    argmax is the target's (the true label)."""
    q_np, y = example
    q = torch.as_tensor(q_np, dtype=torch.float64).unsqueeze(0)
    logits = torch.log(q.clamp_min(1e-30)).requires_grad_(True)
    loss = soft_cross_entropy(logits, q, _meld_weights().double(), torch.tensor([y]))
    (g,) = torch.autograd.grad(loss, logits)
    assert g.abs().max().item() < 1e-5  # the loss computes in float32; the old w ⊙ q gave O(0.1)


def test_class_weights_balanced_and_never_zero():
    y = np.array([0] * 6 + [1] * 3 + [2, 3, 4, 5, 6])
    w = class_weights(y)
    assert w[0] == pytest.approx(14 / (7 * 6)) and w[2] == pytest.approx(2.0)
    with pytest.warns(UserWarning, match="absent.*'fear'"):
        w2 = class_weights(np.array([0, 1, 2, 3, 4, 5]))
    assert (w2 > 0).all() and w2[6] == 1.0


def test_shuffle_sampler_seeded_per_epoch_and_sharded():
    s = ShuffleSampler(10, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    assert sorted(e0) == list(range(10)) and list(s) != e0
    s.set_epoch(0)
    assert list(s) == e0
    shards = [ShuffleSampler(10, seed=1, rank=r, world_size=3) for r in range(3)]
    got = [list(x) for x in shards]
    assert all(len(g) == 4 for g in got) and set(sum(got, [])) == set(range(10))


def test_balanced_sampler_draws_each_corpus_equally():
    corpora = ["big"] * 90 + ["small"] * 10
    s = BalancedCorpusSampler(corpora, seed=0)
    s.set_epoch(2)
    idx = list(s)
    assert len(idx) == 100
    c = Counter(corpora[i] for i in idx)
    assert c == {"big": 50, "small": 50}
    small = Counter(i for i in idx if corpora[i] == "small")
    assert set(small.values()) == {5}  # every small sample exactly 5 times
    big = [i for i in idx if corpora[i] == "big"]
    assert len(set(big)) == 50  # no repeats in the big corpus
    s.set_epoch(3)
    assert list(s) != idx


def test_cached_encodings_round_trip():
    m = _manifest(4)
    ds = EmotionDataset(m, *_stores(m.utt_id))
    enc = {"a": torch.randn(2, 5, 3), "a_mask": torch.ones(2, 5, dtype=torch.bool), "pooled": torch.randn(2, 4)}
    parts = split_encoded(enc, 2) + split_encoded({k: v[:, :3] if v.dim() > 2 or k == "a_mask" else v
                                                    for k, v in enc.items()}, 2)
    cds = CachedEncodingDataset(ds, parts)
    batch = collate([cds[i] for i in (3, 0)])
    e = batch["encoded"]
    assert e["a"].shape == (2, 5, 3) and e["a_mask"][0].tolist() == [True] * 3 + [False] * 2
    assert torch.equal(e["pooled"][1], enc["pooled"][0])
    with pytest.raises(ValueError, match="freeze_encoders=False"):
        split_encoded({"x": torch.randn(3, 2)}, 2)


def test_audio_pool_averages_frames_and_keeps_the_tail():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert np.allclose(pool_frames(x, 2), [[1, 2], [5, 6], [8, 9]])
    assert pool_frames(x[:1], 4).shape == (1, 2)
    m = _manifest(2)
    a, t = _stores(m.utt_id)
    a[m.utt_id[0]] = np.ones((9, 3), np.float32)
    ds = EmotionDataset(m, a, t, audio_pool=4)
    assert ds[0]["audio"].shape == (3, 3) and np.allclose(ds[0]["audio"], 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=7, max_size=7), st.sampled_from(CLASSES), st.booleans())
def test_a_valid_ls_llm_row_is_stale_exactly_for_another_label(values, label, with_label_column):
    """``stale_soft_labels``: a row that passed ``validate_distribution`` for ``label`` is never stale for that
    label, and always for any other (its true label is strictly highest), with or without a label column."""
    from hypothesis import assume

    from bber_utils.augment.ls_llm import validate_distribution
    from bber_utils.train.dataset import stale_soft_labels

    dist, _, _ = validate_distribution(values, label, "swap")
    assume(dist is not None)
    soft = pd.DataFrame({"utt_id": ["u", "not-in-the-manifest"], **{c: [dist[i]] * 2 for i, c in enumerate(CLASSES)}})
    if with_label_column:
        soft["label"] = label
    assert stale_soft_labels(soft, {"u": label}).tolist() == [False, False]
    for other in CLASSES:
        if other != label:
            assert stale_soft_labels(soft, {"u": other}).tolist() == [True, False]
