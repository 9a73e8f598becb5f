"""``TrainConfig.check``: every key of the trainer gets a type and range check before any data is read, and one
line names every bad key (issue 25: values that passed the check used to fail deep inside training)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bber_utils.core.errors import ConfigError
from bber_utils.train import TrainConfig

# One bad value per field: the test below fails when a field is added without a check.
BAD = {
    "workdir": "", "seed": 1.5, "device": "gpu", "model": "biformerr", "train_corpora": [],
    "run_name": "../elsewhere", "sds_ratio": 1.5, "sds_target_seconds": 0.0, "sds_max_seconds": float("nan"),
    "tug_ratio": -0.5, "tug_mode": "per-class", "ls_llm_p": 1.5, "soft_labels": "", "label_smoothing": 1.0,
    "augment_unimodal": "false", "balanced_sampling": 1, "class_weight_power": float("inf"),
    "audio_encoder": "wav2vecc", "text_encoder": "e5-wordz", "audio_layer": 2.5, "text_max_tokens": 0,
    "text_context": -1, "text_context_mode": "avg", "text_trust_remote_code": "yes", "text_code_revision": 7,
    "feature_device": "gpu", "feature_batch_size": 0, "audio_pool": 0, "epochs": 2.5, "batch_size": "1e9",
    "eval_batch_size": 0, "lr": -1, "weight_decay": float("nan"), "scheduler": "cosin", "warmup_ratio": 1.5,
    "patience": 0, "grad_clip": -1.0, "amp": "fp8", "unimodal_epochs": -1, "unimodal_lr": float("inf"),
    "oof_folds": 1, "hidden_dim": 0, "num_heads": 3, "num_layers": -1, "mamba_layers": 1.5, "mamba_d_state": 0,
    "mamba_d_conv": 0, "bimamba_layers": -2, "graph_heads": 0, "graph_conv": "gcn", "graph_segments": -1,
    "gated_dim": 0, "out_features": 0, "dropout": 1.5, "norm_first": "no", "ff_expansion": -1,
    "freeze_encoders": None, "resume": "true", "interrupt_after": -1, "progress": 2, "num_threads": -1,
    "compile": "no", "audio_norm": "speakers", "pooling": "max", "text_context_speaker": "yes",
    "parallel_stage1": "yes",
}


def test_every_field_has_a_bad_value_here():
    assert set(BAD) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("key", sorted(BAD))
def test_every_field_is_checked(key):
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict({key: BAD[key]})
    msg = str(exc.value)
    assert key in msg and "\n" not in msg, msg


def test_every_bad_key_is_named_in_one_line():
    with pytest.raises(ConfigError) as exc:
        TrainConfig.from_dict({"epochs": float("inf"), "lr": -1, "dropout": 1.5, "seed": 1.5})
    msg = str(exc.value)
    for needle in ("epochs must be an integer (got inf)", "lr must be > 0 (got -1)", "dropout must be in [0, 1)",
                   "seed must be an integer (got 1.5)"):
        assert needle in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("values, needle", [
    ({"hidden_dim": 10, "num_heads": 3}, "hidden_dim 10 is not divisible by num_heads 3"),
    ({"hidden_dim": 30}, "hidden_dim 30 is not divisible by num_heads 16"),   # ModelConfig's default heads
    ({"sds_target_seconds": 6.0, "sds_max_seconds": 4.0}, "sds_max_seconds (4.0) must be >= sds_target_seconds"),
    ({"audio_layer": 3}, "audio_layer"),                                      # logmel has no layers
    ({"train_corpora": ["demo_en", "demo_en"]}, "train_corpora"),
    ({"run_name": "a/b"}, "run_name"),
])
def test_keys_checked_together(values, needle):
    with pytest.raises(ConfigError, match=None) as exc:
        TrainConfig.from_dict(values)
    assert needle in str(exc.value), exc.value


@pytest.mark.parametrize("values", [
    {}, {"lr": "1e-4"}, {"unimodal_lr": "2e-3"}, {"train_corpora": ["demo_en", "demo_ru"]},
    {"train_corpora": "demo_en"}, {"train_corpora": None}, {"device": "cuda:1"}, {"feature_device": "mps"},
    {"seed": 0}, {"hidden_dim": 32, "num_heads": 4}, {"norm_first": True}, {"unimodal_epochs": None},
    {"audio_encoder": "owner/model", "audio_layer": -1}, {"run_name": "my-run_1.2"},
])
def test_good_values_pass(values):
    TrainConfig.from_dict(values)


def test_numbers_that_yaml_reads_as_text_are_numbers():
    """``lr=1e-4`` is the string '1e-4' to YAML 1.1: a float key takes it as the number (its run name is that of
    0.0001); an integer key does not guess (``batch_size=1e9`` is refused above)."""
    tc = TrainConfig.from_dict({"lr": "1e-4"})
    assert tc.lr == 1e-4 and isinstance(tc.lr, float)
    assert tc.identity() == TrainConfig.from_dict({"lr": 0.0001}).identity()


def test_the_profiles_pass():
    from bber_utils.train.profiles import load_profile

    for name in ("smoke", "demo", "paper"):
        TrainConfig.from_dict(load_profile(name))


@pytest.mark.parametrize("value", ["false", "no", "0"])
def test_augment_unimodal_given_as_text_is_refused(value):
    """A quoted "false" (profile or --set) is a truthy string: stage 1 of an augmented fusion model would train
    on the augmented rows under a run name that says augment_unimodal: "false". One clear error instead."""
    from bber_utils.core.errors import ConfigError
    from bber_utils.train import TrainConfig

    with pytest.raises(ConfigError, match="augment_unimodal"):
        TrainConfig.from_dict({"model": "biformer", "sds_ratio": 0.5, "augment_unimodal": value})
    assert TrainConfig.from_dict({"model": "biformer", "sds_ratio": 0.5, "augment_unimodal": False}).stage1_config() \
        .sds_ratio == 0.0


# --------------------------------------------------------------------------- what each key changes (metadata)
# The fields without ``stage1`` metadata, and why they are not in the stage-1 cache key: a field added without
# metadata fails the test below until it is marked or listed here.
NOT_IN_STAGE1_KEY = {
    # through the rows stage 1 trains on (their ids and labels are hashed) or the config stage 1 trains with
    "model": "rows", "train_corpora": "rows", "sds_ratio": "rows", "sds_target_seconds": "rows",
    "sds_max_seconds": "rows", "tug_ratio": "rows", "tug_mode": "rows", "augment_unimodal": "rows",
    "soft_labels": "the soft-label table's digest",
    # through the feature store's key (its folder name)
    "audio_encoder": "store", "text_encoder": "store", "audio_layer": "store", "text_max_tokens": "store",
    "text_context": "store", "text_context_mode": "store", "text_trust_remote_code": "store",
    "text_code_revision": "store", "audio_norm": "store", "text_context_speaker": "store",
    # through unimodal_epochs / unimodal_lr when those are unset
    "epochs": "fallback", "lr": "fallback",
    # stage 2 only: fusion layers, their sizes, its frozen encoders, the out-of-fold file (oof{K}.parquet)
    "num_heads": "stage 2", "num_layers": "stage 2", "bimamba_layers": "stage 2", "graph_heads": "stage 2",
    "graph_conv": "stage 2", "graph_segments": "stage 2", "gated_dim": "stage 2", "norm_first": "stage 2",
    "ff_expansion": "stage 2", "freeze_encoders": "stage 2", "oof_folds": "stage 2",
}


def test_every_field_says_whether_it_changes_stage_1():
    marked = {f.name for f in dataclasses.fields(TrainConfig) if "stage1" in f.metadata}
    control = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("control")}
    everything = {f.name for f in dataclasses.fields(TrainConfig)}
    assert not marked & set(NOT_IN_STAGE1_KEY) and not marked & control
    assert everything - marked - control == set(NOT_IN_STAGE1_KEY), "mark the new field with stage1() or list it"


def _legacy_stage1_key(tc, modality):
    """The hand-written key that ``config.stage1_key`` replaced (bber_utils/train/unimodal.py before it): every
    stage-1 cache written by that code must keep its name."""
    mc = tc.model_config().to_dict()
    key = {"model": {k: mc[k] for k in ("hidden_dim", "mamba_layers", "mamba_d_state", "mamba_d_conv",
                                        "out_features", "dropout", "pooling") if k in mc},
           "audio_pool": tc.audio_pool if modality == "audio" else 1,
           "epochs": tc.unimodal_epochs or tc.epochs, "lr": tc.unimodal_lr or tc.lr, "seed": tc.seed,
           "opt": [tc.batch_size, tc.weight_decay, tc.scheduler, tc.warmup_ratio, tc.patience, tc.grad_clip,
                   tc.balanced_sampling],
           "targets": [tc.ls_llm_p, tc.label_smoothing]}
    if tc.class_weight_power != 1.0:
        key["class_weight_power"] = float(tc.class_weight_power)
    return key


def _legacy_identity(tc):
    """The run hash's keys as ``TrainConfig.identity`` wrote them by hand before the fields' metadata."""
    control = ("run_name", "resume", "interrupt_after", "progress", "device", "amp", "workdir", "eval_batch_size",
               "num_threads", "feature_device", "feature_batch_size", "compile")
    out = {k: v for k, v in tc.to_dict().items() if k not in control}
    for key, default in (("class_weight_power", 1.0), ("text_context_mode", "steps")):
        if out.get(key) == default:
            del out[key]
    if not tc.stage1_choice_matters():
        del out["augment_unimodal"]
    return out


_MAYBE = st.none()
CONFIGS = st.fixed_dictionaries({
    "seed": st.integers(0, 2**31), "batch_size": st.integers(1, 64), "weight_decay": st.sampled_from([0.0, 0.01, 0.1]),
    "scheduler": st.sampled_from(["cosine", "plateau", "none"]), "warmup_ratio": st.sampled_from([0, 0.0, 0.1]),
    "patience": st.integers(1, 20), "grad_clip": st.sampled_from([0.0, 1.0, 5.0]), "balanced_sampling": st.booleans(),
    "ls_llm_p": st.sampled_from([0.0, 0.2, 1.0]), "label_smoothing": st.sampled_from([0.0, 0.1]),
    "class_weight_power": st.sampled_from([1.0, 1, 0.5, 0, 2]), "audio_pool": st.integers(1, 8),
    "epochs": st.integers(1, 80), "unimodal_epochs": _MAYBE | st.integers(0, 80), "lr": st.sampled_from([1e-4, 2e-3]),
    "unimodal_lr": _MAYBE | st.sampled_from([0.0, 3e-3]), "hidden_dim": _MAYBE | st.sampled_from([32, 64]),
    "num_heads": _MAYBE | st.sampled_from([2, 4]), "mamba_layers": _MAYBE | st.integers(0, 3),
    "mamba_d_state": _MAYBE | st.integers(1, 16), "mamba_d_conv": _MAYBE | st.integers(1, 6),
    "out_features": _MAYBE | st.integers(1, 64), "dropout": _MAYBE | st.sampled_from([0.0, 0.15]),
    "model": st.sampled_from(["biformer", "audio_only", "bimamba"]), "sds_ratio": st.sampled_from([0.0, 0.5]),
    "augment_unimodal": st.booleans(), "text_context_mode": st.sampled_from(["steps", "mean"]),
    "device": st.sampled_from(["cpu", "auto"]), "num_layers": _MAYBE | st.integers(0, 3),
    "pooling": _MAYBE | st.sampled_from(["mean", "stats", "attention"]),
    "audio_norm": st.sampled_from(["none", "speaker"]), "text_context_speaker": st.booleans(),
})


@settings(max_examples=300, deadline=None)
@given(values=CONFIGS, modality=st.sampled_from(["audio", "text"]))
def test_stage1_key_and_run_hash_are_those_of_the_hand_written_lists(values, modality):
    """Same key, hence same cache folder and run name, as the lists the metadata replaced, for any config."""
    from bber_utils.train.config import stage1_key

    tc = TrainConfig(**values)
    assert stage1_key(tc, modality) == _legacy_stage1_key(tc, modality)
    assert tc.identity() == _legacy_identity(tc)


@pytest.mark.parametrize("name", sorted(f.name for f in dataclasses.fields(TrainConfig) if "stage1" in f.metadata))
def test_each_marked_key_changes_the_stage1_key(name):
    from bber_utils.train.config import stage1_key

    tc = TrainConfig(unimodal_epochs=None, unimodal_lr=None)
    other = {bool: lambda v: not v, str: lambda v: "cosine" if v != "cosine" else "none"}.get(
        type(getattr(tc, name)), lambda v: 2 * v or 1 if isinstance(v, int) else 0.5 * (v or 1) + 0.01)
    other = (lambda v: "stats") if name == "pooling" else other
    changed = dataclasses.replace(tc, **{name: other(getattr(tc, name))})
    for modality in ("audio", "text") if name != "audio_pool" else ("audio",):
        assert stage1_key(changed, modality) != stage1_key(tc, modality), (name, modality)


def test_keys_added_later_leave_earlier_run_names_and_recorded_configs_unchanged():
    """``audio_norm``, ``pooling`` and ``text_context_speaker`` (and the control key ``parallel_stage1``) at their
    defaults are left out of ``to_dict`` (the config in metrics.json), of ``identity`` (run names) and of the
    feature settings a checkpoint stores; set, the first three are in all three, ``parallel_stage1`` in
    ``to_dict`` only."""
    import dataclasses

    from bber_utils.train.config import TrainConfig, feature_spec

    LATER_KEYS = {"audio_norm", "pooling", "text_context_speaker", "parallel_stage1"}
    assert {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("unlisted")} == LATER_KEYS
    tc = TrainConfig()
    assert not set(LATER_KEYS) & set(tc.to_dict()) and not set(LATER_KEYS) & set(tc.identity())
    assert {f.name for f in dataclasses.fields(tc)} - set(tc.to_dict()) == set(LATER_KEYS)
    assert "audio_norm" not in feature_spec(tc)
    tc2 = TrainConfig(audio_norm="speaker", pooling="stats", text_context_speaker=True)
    assert {"audio_norm", "pooling", "text_context_speaker"} <= set(tc2.identity())
    assert feature_spec(tc2)["audio_norm"] == "speaker" and tc2.model_config().pooling == "stats"
    assert TrainConfig.from_dict(tc2.to_dict()) == tc2
    tc3 = TrainConfig(parallel_stage1=False)
    assert tc3.to_dict()["parallel_stage1"] is False and tc3.identity() == tc.identity()
    with pytest.raises(Exception, match="audio_norm"):
        TrainConfig.from_dict({"audio_norm": "speakers"})


def test_class_weight_power_defaults_per_corpus_and_leaves_other_corpora_unchanged():
    """Unset, ``class_weight_power`` is the corpora's: 0.5 for MELD alone (square-root weights, the higher dev WF1
    on MELD's official splits: benchmarks/real_text.md); 1 (the paper's balanced weights) for the demo corpus,
    any other corpus and a mix, hashed and cached exactly as runs that set 1 were, so demo results do not move."""
    from bber_utils.train.config import stage1_key

    unset = TrainConfig.from_dict({})
    assert unset.class_weight_power is None
    for corpora, power in ((["meld"], 0.5), (["demo_en", "demo_ru"], 1.0), (["meld", "resd"], 1.0),
                           (["resd"], 1.0), (["smoke"], 1.0)):
        tc = unset.for_corpora(corpora)
        explicit = TrainConfig.from_dict({"class_weight_power": power})
        assert tc.class_weight_power == power, corpora
        assert tc.identity() == explicit.identity() and stage1_key(tc, "text") == stage1_key(explicit, "text")
    assert "class_weight_power" not in unset.for_corpora(["demo_en", "demo_ru"]).identity()
    # a name computed before the corpora are known (no manifests yet) is the one runs had before this default
    assert unset.identity() == TrainConfig.from_dict({"class_weight_power": 1.0}).identity()
    assert stage1_key(unset, "audio") == stage1_key(TrainConfig.from_dict({"class_weight_power": 1.0}), "audio")
    assert TrainConfig.from_dict({"class_weight_power": 1.0}).for_corpora(["meld"]).class_weight_power == 1.0
