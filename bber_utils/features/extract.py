"""``extract_all``: features for every manifest of a work folder (notebook 02 and ``bber extract``)."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bber_utils.core.fileio import check_writable
from bber_utils.core.paths import run_dirs
from bber_utils.corpora.manifest import load_manifest, save_manifest
from bber_utils.features.asr import build_asr, fill_missing_text
from bber_utils.features.audio_encoders import build_audio_encoder
from bber_utils.features.store import FeatureStore, check_shard, ensure_features
from bber_utils.features.text_encoders import build_text_encoder


@dataclass
class Extraction:
    """What ``extract_all`` did: the two stores, one summary row per manifest, and the manifests used."""

    audio: object
    text: object
    summary: pd.DataFrame
    manifests: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: float = 0.0

    def shapes(self, n_per_manifest: int = 2) -> pd.DataFrame:
        """A few utterances per manifest with their feature shapes ``(T, D)``."""
        rows = []
        for name, df in self.manifests.items():
            for u, lang, label, text in df[["utt_id", "language", "label", "text"]].head(n_per_manifest).itertuples(
                    index=False):
                rows.append({"manifest": name, "utt_id": u, "language": lang, "label": label,
                             "text": text[:40], "audio (T, D)": _shape(self.audio, u),
                             "text (T, D)": _shape(self.text, u)})
        return pd.DataFrame(rows)


def _shape(store, utt_id):
    return (store.length(utt_id), store.dim) if store is not None and utt_id in store else None


def has_audio(df: pd.DataFrame) -> pd.Series:
    """Rows with an audio file (text-only manifests, e.g. from ``bber prepare table``, have ``audio_path == ""``)."""
    return df["audio_path"].fillna("").astype(str).str.strip() != ""


def encoders_from_params(params: dict) -> tuple[object, object]:
    """The audio and text encoders a profile's flat parameters describe (keys of notebook 02:
    ``audio_encoder``, ``audio_layer``, ``text_encoder``, ``text_max_tokens``, ``text_trust_remote_code``,
    ``text_code_revision``), so every stage that builds encoders from a profile gets the same store keys."""

    audio = build_audio_encoder(params.get("audio_encoder") or "logmel", layer=params.get("audio_layer"))
    text_spec = params.get("text_encoder") or "e5-words"
    text_opts = {"max_tokens": params.get("text_max_tokens", 95)}
    if text_spec not in ("e5-words", "e5-windows", "hashgram"):
        text_opts.update(trust_remote_code=bool(params.get("text_trust_remote_code")) or None,
                         code_revision=params.get("text_code_revision"))
    return audio, build_text_encoder(text_spec, **text_opts)


def manifest_paths(workdir: str | os.PathLike) -> dict[str, Path]:
    """``{"demo_en_train": Path(...), ...}``: every ``<workdir>/manifests/*.parquet``."""

    return {p.stem: p for p in sorted(run_dirs(workdir).manifests.glob("*.parquet"))}


def extract_all(workdir: str | os.PathLike, audio_spec: str = "logmel", text_spec: str = "e5-words",
                extra_manifests: list[str | os.PathLike] | None = None, asr_model: str | None = None,
                audio_layer: int | None = None, text_max_tokens: int | None = 95, batch_size: int = 16,
                device: str = "auto", store_dtype: str = "float32", trust_remote_code: bool = False,
                text_code_revision: str | None = None, progress: bool = True, shard=None,
                flush_every: int = 512, flush_seconds: float = 30.0) -> Extraction:
    """Extract (or load) audio and text features for every manifest in ``<workdir>/manifests`` and the
    ``extra_manifests`` given (e.g. SDS / TUG ones), into ``<workdir>/features``.

    With ``asr_model``, empty transcripts are filled by ASR first and the manifest is saved again with the
    text and its provenance (``text_source``, ``asr_language``, ``asr_model``), so later stages read the same
    text. Encoders are built once and load their models only if something is missing. Rows without audio
    (``audio_path == ""``) get text features only; with no audio anywhere, ``Extraction.audio`` is None.

    ``shard=(index, count)`` (or ``"index/count"``): this process extracts only its share of every manifest into
    its own part of each store (``store.ensure_features``); run the shards in parallel (one per GPU), then once
    without ``shard`` to merge them. ASR rewrites the manifests, so it must run unsharded first.
    """

    t0 = time.perf_counter()
    shard = check_shard(shard)
    dirs = run_dirs(workdir)
    paths = manifest_paths(workdir)
    for p in extra_manifests or []:
        p = Path(p)
        paths[p.stem] = p
    if not paths:
        raise FileNotFoundError(f"no manifests in {dirs.manifests}: run notebook 01 (bber prepare) first")
    audio_enc, text_enc = encoders_from_params({
        "audio_encoder": audio_spec, "audio_layer": audio_layer, "text_encoder": text_spec,
        "text_max_tokens": text_max_tokens, "text_trust_remote_code": trust_remote_code,
        "text_code_revision": text_code_revision})
    asr = build_asr(asr_model)

    rows, manifests, audio_store, text_store = [], {}, None, None
    for name, path in paths.items():
        t = time.perf_counter()
        df = load_manifest(path)
        n_missing = int((df["text"].str.strip() == "").sum())
        if asr is not None and n_missing and shard is not None:
            raise ValueError(f"{name}: {n_missing} utterance(s) need ASR, which rewrites the manifest: run the "
                             f"extraction once without shard (it transcribes them), then shard it")
        if asr is not None and n_missing:
            check_writable(path.parent, f"ASR writes {n_missing} transcripts back into {path.name}; make it "
                                        "writable or choose another --workdir")
            df = fill_missing_text(df, asr, cache_path=dirs.features / "asr_transcripts.parquet",
                                   device=device, progress=progress)
            save_manifest(df, path)
        elif n_missing:
            warnings.warn(f"{name}: {n_missing} utterance(s) have no text (their text features are those of an "
                          f"empty string); set asr_model to transcribe them", stacklevel=2)
        manifests[name] = df
        common = dict(batch_size=batch_size, device=device, store_dtype=store_dtype, progress=progress,
                      shard=shard, flush_every=flush_every, flush_seconds=flush_seconds)
        with_audio = has_audio(df)
        a = {"extracted": 0, "cached": 0, "skipped": 0}
        if with_audio.any():
            audio_store = ensure_features(df[with_audio], "audio", audio_enc, dirs.features, desc=f"{name} audio",
                                          **common)
            a = audio_store.stats
        text_store = ensure_features(df, "text", text_enc, dirs.features, desc=f"{name} text", **common)
        x = text_store.stats
        rows.append({"manifest": name, "rows": len(df), "audio_extracted": a["extracted"],
                     "audio_cached": a["cached"], "audio_skipped": a["skipped"],
                     "no_audio": int((~with_audio).sum()), "text_extracted": x["extracted"],
                     "text_cached": x["cached"], "text_skipped": x["skipped"],
                     "text_missing": int((df["text"].str.strip() == "").sum()),
                     "asr_filled": int((df.get("text_source", pd.Series(dtype=str)) == "asr").sum()),
                     "seconds": round(time.perf_counter() - t, 2)})
    # Reopen: the last stores' indexes cover every manifest.
    return Extraction(audio=FeatureStore(audio_store.path) if audio_store is not None else None,
                      text=FeatureStore(text_store.path),
                      summary=pd.DataFrame(rows), manifests=manifests, seconds=time.perf_counter() - t0)
