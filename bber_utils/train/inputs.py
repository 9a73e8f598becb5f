"""What a run trains on: the corpora (``train_corpora``, ``"all"``), their train/dev/test manifests, the train
manifest with SDS merges and TUG synthetic rows, the feature stores (extracting what is missing), the LS-LLM
soft-label table, the rows whose features exist, and one dataset per corpus and split.

Owns: ``LabelSpace``, ``label_space``, ``check_label_sets``, ``resolve_corpora``, ``load_splits``, ``build_train_manifest``, ``load_soft_labels_for``,
``build_feature_stores``, ``store_key``, ``filter_available``, ``split_datasets``, and the fingerprints of what a
run reads (``content_ids``, ``data_fingerprint``, ``soft_digest``).
Imports from this package: ``config``, ``distributed``. Must not import: ``loop``, ``runs``, ``crossfit`` or the
stages (nothing here trains).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bber_utils.core.errors import ConfigError
from bber_utils.core.labels import CLASSES, NUM_CLASSES, class_indices
from bber_utils.core.paths import REPO_ROOT, run_dirs
from bber_utils.corpora import corpus_classes
from bber_utils.corpora.manifest import concat_manifests, load_manifest
from bber_utils.features import ensure_features
from bber_utils.features.extract import encoders_from_params, has_audio
from bber_utils.train.config import TrainConfig
from bber_utils.train.dataset import EmotionDataset
from bber_utils.train.distributed import is_main_process


@dataclass(frozen=True)
class LabelSpace:
    """The label sets of a run's corpora: ``scoring`` (each corpus's own classes, indices; what its scores
    average over) and ``allowed`` (their union: the classes the model may predict; None = all seven, as for MELD,
    RESD and the demo corpora, where nothing is masked)."""

    scoring: dict = field(default_factory=dict)
    allowed: tuple | None = None

    def classes_of(self, corpus: str) -> tuple | None:
        """The corpus's label set (indices), or None for all seven."""
        own = self.scoring.get(corpus)
        return None if own is None or len(own) == NUM_CLASSES else own


def label_space(corpora: list[str], workdir) -> LabelSpace:
    """The ``LabelSpace`` of ``corpora`` from their label-set files (``corpora.corpus_classes``)."""
    scoring = {c: class_indices(corpus_classes(workdir, c)) for c in corpora}
    union = tuple(sorted(set().union(*scoring.values()))) if scoring else tuple(range(NUM_CLASSES))
    return LabelSpace(scoring, None if len(union) == NUM_CLASSES else union)


def check_label_sets(splits: dict[str, pd.DataFrame], space: LabelSpace) -> tuple[dict, dict, dict]:
    """``(splits, outside, unseen)``: the rows whose class is outside their corpus's label set are left out and
    counted (``outside``: {split: {reason: n}}); ``unseen``: {corpus: {split: {class: n}}}, the dev/test rows of a
    class that the corpus's train rows lack (scored, but no model learned them). One warning line for each."""
    out, outside, unseen = dict(splits), {}, {}
    for split, df in splits.items():
        own = df["corpus"].map(lambda c: {CLASSES[i] for i in space.scoring.get(c, range(NUM_CLASSES))})
        bad = np.array([lbl not in s for lbl, s in zip(df["label"], own)], dtype=bool)
        if bad.any():
            reason = "class outside the corpus's label set"
            outside[split] = {reason: int(bad.sum())}
            warnings.warn(f"{split} split: skipped {int(bad.sum())} row(s) whose class is outside their corpus's "
                          f"label set (e.g. {df['utt_id'][bad].iloc[0]!r}: {df['label'][bad].iloc[0]!r})",
                          stacklevel=2)
            out[split] = df.loc[~bad].reset_index(drop=True)
    for corpus, rows in out["train"].groupby("corpus"):
        trained = set(rows["label"])
        for split in ("dev", "test"):
            other = out[split][(out[split]["corpus"] == corpus) & ~out[split]["label"].isin(trained)]
            if len(other):
                counts = {str(k): int(v) for k, v in other["label"].value_counts().sort_index().items()}
                unseen.setdefault(corpus, {})[split] = counts
                warnings.warn(f"{corpus}: its {split} split has {len(other)} row(s) of classes its train split lacks "
                              f"{counts}: they are scored, but no model learned them", stacklevel=2)
    return out, outside, unseen


def resolve_corpora(train_corpora: Any, workdir) -> list[str]:
    """``"all"`` -> every corpus with a train manifest in ``<workdir>/manifests``; a name or list as given."""
    dirs = run_dirs(workdir)
    available = sorted({p.name[: -len("_train.parquet")] for p in dirs.manifests.glob("*_train.parquet")})
    if train_corpora in (None, "all", ["all"]):
        if not available:
            raise FileNotFoundError(f"no train manifests in {dirs.manifests}; run notebook 01 (prepare data) first")
        return available
    corpora = [train_corpora] if isinstance(train_corpora, str) else list(train_corpora)
    missing = [c for c in corpora if c not in available]
    if missing:
        raise FileNotFoundError(f"train_corpora {missing}: no manifests {dirs.manifests}/<corpus>_train.parquet "
                                f"(available: {available or 'none'})")
    return corpora


def load_splits(corpora: list[str], workdir) -> dict[str, pd.DataFrame]:
    """``{"train"|"dev"|"test": manifest of all corpora}`` read from ``<workdir>/manifests``."""

    dirs = run_dirs(workdir)
    out = {}
    for split in ("train", "dev", "test"):
        frames, paths = [], []
        for c in corpora:
            path = dirs.manifest(c, split)
            if not path.exists():
                raise FileNotFoundError(f"manifest {path} is missing (corpus {c!r}, split {split!r})")
            frames.append(load_manifest(path))
            paths.append(str(path))
        out[split] = concat_manifests(frames)
        if len(out[split]) == 0 and split != "test":  # a corpus without a test split is scored on dev
            raise ConfigError(f"split {split!r} of {corpora} is empty (no rows in {', '.join(paths)}); "
                              f"prepare the data again or choose other train_corpora")
    return out


def build_train_manifest(tc: TrainConfig, train_df: pd.DataFrame) -> pd.DataFrame:
    """Original train rows + SDS merges (``sds_ratio``) + TUG synthetic rows (``tug_ratio``)."""

    dirs = run_dirs(tc.workdir)
    out = train_df
    if tc.sds_ratio > 0:
        try:
            from bber_utils.augment.sds import apply_sds
        except ImportError as err:
            raise ImportError(f"sds_ratio={tc.sds_ratio} needs bber_utils.augment.sds ({err})") from err
        out = apply_sds(train_df, ratio=tc.sds_ratio, seed=tc.seed, out_dir=dirs.sds,
                        target_seconds=tc.sds_target_seconds, max_seconds=tc.sds_max_seconds,
                        progress=tc.progress and is_main_process())
    if tc.tug_ratio > 0:
        try:
            from bber_utils.augment.tug import mix_synthetic
        except ImportError as err:
            raise ImportError(f"tug_ratio={tc.tug_ratio} needs bber_utils.augment.tug ({err})") from err
        langs = sorted(set(out["language"]))
        _check_tug_languages(langs, dirs.tug)
        paths = [dirs.tug / f"tug_{lang}.parquet" for lang in langs]
        found = [p for p in paths if p.exists()]
        if not found:
            raise FileNotFoundError(f"tug_ratio={tc.tug_ratio} but no synthetic manifest "
                                    f"{' or '.join(map(str, paths))}; run notebook 04 (TUG) first")
        synthetic = concat_manifests([load_manifest(p) for p in found])
        out = mix_synthetic(out, synthetic, ratio=tc.tug_ratio, mode=tc.tug_mode, seed=tc.seed)
    return out.reset_index(drop=True)


def _check_tug_languages(langs: list[str], tug_dir: Path) -> None:
    """``ConfigError`` (one line) for a train language that has neither built-in templates nor a TUG manifest."""
    from bber_utils.synthesis.templates import LANGUAGES as TEMPLATE_LANGUAGES

    missing = [lang for lang in langs if lang not in TEMPLATE_LANGUAGES and not (tug_dir / f"tug_{lang}.parquet").exists()]
    if missing:
        raise ConfigError(f"tug_ratio > 0, but TUG has no templates for language(s) {', '.join(missing)} (built-in: "
                          f"{', '.join(TEMPLATE_LANGUAGES)}) and no synthetic manifest for them: train with tug_ratio 0")


def load_soft_labels_for(tc: TrainConfig) -> pd.DataFrame | None:
    """The LS-LLM table when ``ls_llm_p > 0`` (else None)."""
    if tc.ls_llm_p <= 0:
        return None
    path = Path(tc.soft_labels) if tc.soft_labels else run_dirs(tc.workdir).ls_llm / "soft_labels.parquet"
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        raise FileNotFoundError(f"ls_llm_p={tc.ls_llm_p} but the soft-label table {path} does not exist; "
                                f"run notebook 05 (LS-LLM) or set soft_labels=<path>")
    try:
        from bber_utils.augment.ls_llm import load_soft_labels
    except ImportError as err:
        raise ImportError(f"ls_llm_p={tc.ls_llm_p} needs bber_utils.augment.ls_llm ({err})") from err
    return load_soft_labels(path)


def build_feature_stores(tc: TrainConfig, manifest: pd.DataFrame) -> tuple[Any, Any]:
    """Audio and text feature stores covering ``manifest`` (extracts what is missing)."""

    dirs = run_dirs(tc.workdir)
    device = tc.feature_device
    audio_enc, text_enc = encoders_from_params(tc.to_dict())  # the same store keys as notebook 02

    audio = None  # text_only trains without audio; rows without audio (text-only manifests) are not extracted
    if tc.model != "text_only" and has_audio(manifest).any():
        audio = ensure_features(manifest[has_audio(manifest)], "audio", audio_enc, dirs.features,
                                batch_size=tc.feature_batch_size, device=device,
                                progress=tc.progress and is_main_process())
    text = ensure_features(manifest, "text", text_enc, dirs.features, batch_size=tc.feature_batch_size,
                           device=device, progress=tc.progress and is_main_process())
    return audio, text


def store_key(store) -> str:
    """What identifies a store's numbers (its folder name carries the encoder key hash)."""
    path = getattr(store, "path", None)
    return Path(path).name if path is not None else getattr(store, "key", type(store).__name__)


def content_ids(store, ids: list[str]) -> list[str]:
    """What identifies each utterance's features in ``store``: the feature store's per-utterance content hash
    (a hash of its input: the text, or the audio file's bytes and span; ``features.store``), joined with those
    of its context utterances for a dialogue-context store (``context.ContextTextStore``); for a store without
    an index (the tests' dict stores) a hash of the features themselves."""
    if hasattr(store, "context_of") and hasattr(store, "store"):  # text_context: the context's texts count too
        contexts = {u: store.context_of(u) for u in ids}
        every = sorted(set(ids).union(*contexts.values()))
        inner = dict(zip(every, content_ids(store.store, every)))
        return [inner[u] + "<" + ",".join(inner[c] for c in contexts[u]) for u in ids]
    index = getattr(store, "index", None)
    if isinstance(index, pd.DataFrame) and "content_hash" in index.columns:
        known = dict(zip(index["utt_id"].astype(str), index["content_hash"].astype(str)))
        return [known.get(u, "") for u in ids]
    return [hashlib.blake2b(np.ascontiguousarray(store[u], dtype=np.float32).tobytes(), digest_size=16).hexdigest()
            for u in ids]


def data_fingerprint(splits: dict[str, pd.DataFrame], stores: tuple) -> str:
    """16 hex digits over what a model reads: each split's rows in order (``utt_id``, corpus, label) and the
    content of their features in each store (``content_ids``). Changes when re-preparing changes a transcript,
    a clip or a label; stays the same for the same data."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(splits):
        df = splits[name]
        ids = df["utt_id"].astype(str).tolist()
        columns = [content_ids(store, ids) for store in stores if store is not None]
        h.update(f"\x1d{name}".encode())
        for row in zip(ids, df["corpus"].astype(str), df["label"].astype(str), *columns):
            h.update(("\x1f".join(row) + "\x1e").encode())
    return h.hexdigest()[:16]


def soft_digest(soft_table: dict) -> str:
    """16 hex digits over an LS-LLM table ``{utt_id: (7,)}`` (sorted by utt_id)."""
    digest = hashlib.blake2b(digest_size=8)
    for u in sorted(soft_table):
        digest.update(u.encode() + np.asarray(soft_table[u], np.float32).tobytes())
    return digest.hexdigest()


def filter_available(df: pd.DataFrame, stores: tuple, where: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows whose audio and text features both exist and are non-empty; the rest counted by reason."""
    keep, reasons = [], {}
    for u in df["utt_id"].astype(str):
        reason = None
        for modality, store in zip(("audio", "text"), stores):
            if store is None:
                continue
            if u not in store:
                reason = f"no {modality} features"
                break
            if len(store[u]) == 0:
                reason = f"empty {modality} features"
                break
        keep.append(reason is None)
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        warnings.warn(f"{where}: skipped {sum(reasons.values())} of {len(df)} utterances: {reasons}", stacklevel=2)
    return df.loc[np.asarray(keep, dtype=bool)].reset_index(drop=True), reasons


def split_datasets(df: pd.DataFrame, stores, soft=None, logits=None, tc: TrainConfig | None = None,
                   name: str = "", train: bool = False, space: LabelSpace | None = None):
    """One dataset per corpus (``{corpus: EmotionDataset}``), or one for all when ``train``; ``space``: the
    classes the model may predict and each corpus's own label set (None: all seven)."""

    space = space or LabelSpace()
    kw = dict(ls_llm_p=tc.ls_llm_p, label_smoothing=tc.label_smoothing, seed=tc.seed) if train else {}
    if train:
        return EmotionDataset(df, *stores, soft_labels=soft, logits=logits, name=name, audio_pool=tc.audio_pool,
                              allowed=space.allowed, **kw)
    return {c: EmotionDataset(g.reset_index(drop=True), *stores, logits=logits, name=f"{name} {c}",
                              audio_pool=tc.audio_pool, allowed=space.allowed, classes=space.classes_of(c))
            for c, g in df.groupby("corpus", sort=True)}
