"""TUG — template-based utterance generation: a synthetic corpus spoken by a TTS, mixed into training.

Three steps (notebook 04, ``bber tug``):

1. Templates per emotion and language: the built-in ones (``augment/templates.py``) or written by an LLM
   (``augment/tug_llm.py``, cached under ``<workdir>/tug/templates/``).
2. ``build_synthetic_corpus``: a seeded composer fills the templates into unique utterances, a TTS backend
   (``augment/tts.py``) speaks them into ``<workdir>/tug/wavs/{lang}/``, and the spoken ones become a
   manifest ``<workdir>/tug/tug_{lang}.parquet`` (``source="tug"``, ``corpus="tug_{lang}"``, split
   ``train``). Failed syntheses are dropped with their reason into ``tug/tug_{lang}_dropped.csv``; silence is
   never saved as data. ``shard=(i, n)`` speaks only utterances ``i, i + n, ...`` (of the composer's order over
   all emotions) into ``tug/parts/tug_{lang}.part-i-of-n.parquet``; the next call without ``shard`` takes the
   parts' rows (their wavs still valid) without calling the TTS, speaks what is still missing, writes the whole
   manifest and removes the parts.
3. ``mix_synthetic``: at training time, synthetic rows of a corpus's language join that corpus's train split
   (and only train), taking its ``corpus`` value.

Unlike the reference, utterance ids follow the composer's seeded order (not a set's hash order), a shortfall of
unique phrases is reported rather than crashing, and a failed synthesis is never saved as 1 s of silence.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bber_utils.augment.tug_llm import resolve_templates, stable_int
from bber_utils.core.fileio import check_writable, locked
from bber_utils.core.labels import CLASSES
from bber_utils.core.paths import run_dirs, workdir_path
from bber_utils.core.progress import tqdm
from bber_utils.corpora.manifest import MANIFEST_COLUMNS, concat_manifests, load_manifest, save_manifest
from bber_utils.features.store import check_shard
from bber_utils.synthesis.templates import compose_utterances, strip_tags
from bber_utils.synthesis.tts import build_tts
if TYPE_CHECKING:
    import pandas as pd


MIX_MODES = ("per_class", "top_up")

DROPPED_COLUMNS = ["utt_id", "language", "label", "text", "reason"]


def synthetic_corpus_name(language: str) -> str:
    """``"en"`` -> ``"tug_en"``: the ``corpus`` value of synthetic rows before they are mixed."""
    return f"tug_{language}"


def synthetic_utt_id(language: str, emotion: str, index: int) -> str:
    """``tug_en-train-happy_00007``: the ``index``-th utterance the seeded composer made for ``emotion``."""
    return f"{synthetic_corpus_name(language)}-train-{emotion}_{index:05d}"


def synthetic_manifest_path(workdir: str | os.PathLike, language: str) -> Path:
    return run_dirs(workdir).tug / f"tug_{language}.parquet"


def dropped_path(workdir: str | os.PathLike, language: str) -> Path:
    return run_dirs(workdir).tug / f"tug_{language}_dropped.csv"


def build_synthetic_corpus(workdir: str | os.PathLike, language: str, per_class: int, tts: Any = "espeak",
                           template_source: Any = "builtin", seed: int = 42, *, tts_model: Any = None,
                           llm_model: str | None = None, base_url: str | None = None,
                           emotions: tuple[str, ...] | None = None, progress: bool = True,
                           shard: Any = None, **tts_kwargs: Any) -> "pd.DataFrame":
    """Compose ``per_class`` utterances per emotion in ``language``, speak them, and save the manifest.

    ``tts``: a backend name (``espeak`` | ``mms`` | ``dia``), a name per language (``{"en": "dia", "ru": "mms"}``)
    or a built backend; ``tts_model`` (one id/folder or one per language) and ``tts_kwargs`` go to
    ``tts.build_tts``. ``template_source``: ``builtin`` | ``openai`` | ``transformers``
    (``tug_llm.resolve_templates`` with ``llm_model`` / ``base_url``), or the mapping ``resolve_templates``
    returned. The i-th utterance the seeded composer gives for an emotion is ``tug_{lang}-train-{emotion}_{i:05d}``;
    its wav ``<workdir>/tug/wavs/{lang}/{utt_id}-{hash}.wav`` is named after the text and the voice, so a rerun
    reuses the valid wavs it has and speaks only what is new or changed. Returns the manifest of the spoken
    utterances, written to ``tug/tug_{lang}.parquet`` (``text`` without the nonverbal tags, ``tts_text`` as
    spoken, ``tts`` the voice, ``template_source``; the returned table also says which wavs were ``reused``);
    what was dropped is in ``tug/tug_{lang}_dropped.csv`` (``load_dropped``) with the reason.
    ``shard=(index, count)`` (or ``"index/count"``): speak only this shard's share and write it as a part (see
    the module docstring); a call without ``shard`` merges the parts.
    """

    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    check_writable(workdir_path(workdir) / "tug", "TUG writes its wavs and manifests there; make it writable or "
                                                  "choose another --workdir")
    shard = check_shard(shard)
    emotions = tuple(CLASSES if emotions is None else emotions)
    if isinstance(template_source, str):
        template_sets = resolve_templates(workdir, [language], template_source, llm_model=llm_model,
                                          base_url=base_url, emotions=emotions, seed=seed)
    else:
        template_sets = template_source
    if isinstance(tts, (str, Mapping)):
        name = tts_for_language(tts, language)
        backend = build_tts(name, **_tts_options(name, language, tts_model, seed, tts_kwargs))
    else:
        backend = tts
    if language not in backend.languages:
        raise ValueError(f"TTS backend {backend.name!r} does not speak {language!r} (it speaks "
                         f"{', '.join(backend.languages)}); choose another with --tts / tug_tts")
    voice = _voice_key(backend, language)
    wav_dir = run_dirs(workdir).tug / "wavs" / language
    rows, dropped = [], []
    jobs = _compose_jobs(template_sets, language, emotions, per_class, seed, voice, wav_dir, dropped)
    position = {it["utt_id"]: k for k, it in enumerate(it for _, items in jobs for it in items)}
    if shard is not None:  # this shard's utterances: positions index, index + count, ... of the whole order
        jobs = [(e, [it for it in items if position[it["utt_id"]] % shard[1] == shard[0]]) for e, items in jobs]
    else:  # rows the shards spoke (same text and voice: same wav path, still on disk) are taken as they are
        jobs = _take_spoken_parts(workdir, language, jobs, rows)
    wav_dir.mkdir(parents=True, exist_ok=True)
    lock = wav_dir / (".lock" if shard is None else f".part-{shard[0]:03d}-of-{shard[1]:03d}.lock")
    with locked(lock, waiting=f"bber tug: another run is speaking into {wav_dir}; waiting for it (its wavs are "
                              "reused)"):  # one speaker at a time: the second run finds the first one's wavs
        _speak(backend, jobs, language, voice, rows, dropped, progress)
    extra = ["tts_text", "tts", "template_source", "reused"]
    rows.sort(key=lambda r: position[r["utt_id"]])  # the composer's order, wherever a row came from
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS + extra)
    df["duration_s"] = df["duration_s"].astype(np.float64)
    manifest_path, dropped_csv = synthetic_manifest_path(workdir, language), dropped_path(workdir, language)
    if shard is not None:
        manifest_path, dropped_csv = _part_paths(workdir, language, shard)
    save_manifest(df.drop(columns="reused"), manifest_path)
    pd.DataFrame(dropped, columns=DROPPED_COLUMNS).to_csv(dropped_csv, index=False)
    if shard is None:
        for part in _part_files(workdir, language):
            part.unlink()
    n_failed = sum(1 for d in dropped if d["utt_id"])
    if n_failed:
        warnings.warn(f"TUG {language}: {n_failed} syntheses failed and were dropped (see "
                      f"{dropped_path(workdir, language)})", stacklevel=2)
    return df


def _compose_jobs(template_sets, language: str, emotions: tuple[str, ...], per_class: int, seed: int, voice: str,
                  wav_dir: Path, dropped: list[dict]) -> list[tuple[str, list[dict]]]:
    """``(emotion, items)`` per emotion: the seeded composer's utterances, each with its id, speaker and wav path
    (named after the text and the voice); an emotion with too few unique utterances is noted in ``dropped``."""
    jobs: list[tuple[str, list[dict]]] = []
    for emotion in emotions:
        ts = template_sets[(language, emotion)]
        texts = compose_utterances(ts.templates, per_class, seed=stable_int(seed, language, emotion))
        if len(texts) < per_class:
            dropped.append(dict(utt_id="", language=language, label=emotion, text="",
                                reason=f"composer found only {len(texts)} of {per_class} unique utterances"))
        items = []
        for i, text in enumerate(texts):
            utt_id = synthetic_utt_id(language, emotion, i)
            speaker = stable_int(seed, utt_id)
            digest = hashlib.sha1(f"{voice}|{emotion}|{speaker}|{text}".encode()).hexdigest()[:10]
            items.append(dict(utt_id=utt_id, label=emotion, tts_text=text, text=strip_tags(text), speaker=speaker,
                              template_source=ts.source, path=wav_dir / f"{utt_id}-{digest}.wav"))
        jobs.append((emotion, items))
    return jobs


def _take_spoken_parts(workdir, language: str, jobs: list[tuple[str, list[dict]]],
                       rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """The jobs left once the rows the shards already spoke (same text and voice: the same wav path, still on
    disk) are taken into ``rows`` as they are."""
    done = _part_rows(workdir, language)
    for emotion, items in jobs:
        for it in items:
            row = done.get(it["utt_id"])
            if row is not None and row["audio_path"] == str(Path(it["path"]).resolve()) and Path(
                    row["audio_path"]).exists():
                rows.append({**row, "reused": True})
    taken = {r["utt_id"] for r in rows}
    return [(e, [it for it in items if it["utt_id"] not in taken]) for e, items in jobs]


def _speak(backend: Any, jobs: list[tuple[str, list[dict]]], language: str, voice: str, rows: list[dict],
           dropped: list[dict], progress: bool) -> None:
    """Speak every job's utterances (``(emotion, items)``, 64 at a time; valid wavs on disk are reused): manifest
    rows of the spoken ones go to ``rows``, the failed ones with their reason to ``dropped``."""

    bar = tqdm(total=sum(len(items) for _, items in jobs), desc=f"TUG {language} ({backend.name})",
               disable=not progress)
    for emotion, items in jobs:
        for start in range(0, len(items), 64):
            chunk = items[start:start + 64]
            results = backend.synthesize([it["tts_text"] for it in chunk], [it["path"] for it in chunk],
                                         emotion=emotion, language=language,
                                         speakers=[it["speaker"] for it in chunk])
            for it, res in zip(chunk, results):
                if res.ok:
                    rows.append(dict(utt_id=it["utt_id"], corpus=synthetic_corpus_name(language), language=language,
                                     split="train", audio_path=str(Path(res.path).resolve()), start_s=0.0,
                                     end_s=float("nan"), duration_s=float(res.duration_s), text=it["text"],
                                     label=emotion, source="tug", tts_text=it["tts_text"], tts=voice,
                                     template_source=it["template_source"], reused=bool(res.reused)))
                else:
                    dropped.append(dict(utt_id=it["utt_id"], language=language, label=emotion, text=it["text"],
                                        reason=res.reason or "synthesis failed"))
            bar.update(len(chunk))
    bar.close()


def _part_paths(workdir: str | os.PathLike, language: str, shard: tuple[int, int]) -> tuple[Path, Path]:
    """The manifest and dropped-list of one shard of ``build_synthetic_corpus``."""

    stem = f"tug_{language}.part-{shard[0]:03d}-of-{shard[1]:03d}"
    folder = run_dirs(workdir).tug / "parts"
    return folder / f"{stem}.parquet", folder / f"{stem}_dropped.csv"


def _part_files(workdir: str | os.PathLike, language: str) -> list[Path]:
    return sorted((run_dirs(workdir).tug / "parts").glob(f"tug_{language}.part-*-of-*"))


def _part_rows(workdir: str | os.PathLike, language: str) -> dict[str, dict]:
    """``utt_id -> manifest row`` of every shard part of ``language`` written so far."""

    rows: dict[str, dict] = {}
    for path in _part_files(workdir, language):
        if path.suffix == ".parquet":
            rows.update({r["utt_id"]: r for r in load_manifest(path).to_dict("records")})
    return rows


def load_synthetic(workdir: str | os.PathLike, languages: list[str] | tuple[str, ...] = ("en", "ru")
                   ) -> "pd.DataFrame":
    """The TUG manifests of ``languages`` that exist, as one table (empty when there are none)."""

    paths = [synthetic_manifest_path(workdir, lang) for lang in languages]
    return concat_manifests([load_manifest(p) for p in paths if p.exists()])


def load_dropped(workdir: str | os.PathLike, languages: list[str] | tuple[str, ...] = ("en", "ru")
                 ) -> "pd.DataFrame":
    """What ``build_synthetic_corpus`` dropped, with reasons (``DROPPED_COLUMNS``)."""

    frames = [pd.read_csv(dropped_path(workdir, lang), keep_default_na=False) for lang in languages
              if dropped_path(workdir, lang).exists()]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DROPPED_COLUMNS)


def tts_for_language(tts: str | Mapping[str, str], language: str) -> str:
    """A backend name for ``language`` from one name or a mapping such as ``{"en": "dia", "ru": "mms"}``."""
    if isinstance(tts, Mapping):
        if language not in tts:
            raise ValueError(f"no TTS backend given for language {language!r} in {dict(tts)}")
        return str(tts[language])
    return str(tts)


def _tts_options(name: str, language: str, tts_model: Any, seed: int, extra: dict) -> dict:
    options: dict[str, Any] = {"seed": seed}
    if name == "espeak":
        options["jitter"] = 1.0  # a small seeded prosody variation per utterance
    model = tts_model.get(language) if isinstance(tts_model, Mapping) else tts_model
    if model:
        options["model"] = model
    options.update(extra)
    return options


# Bump when the synthesis code changes the sound of a wav for the same text and voice (prosody tables, jitter):
# the wav names carry it, so a warm work folder never reuses clips spoken by older code. (The README's TUG row
# once came from English clips spoken before the jitter change of 16a051e and reused by name.)
SYNTHESIS_VERSION = 2


def _engine_version(name: str) -> str:
    """``espeak-ng --version``'s first words for the espeak backend (its output differs between versions)."""
    if name != "espeak":
        return ""

    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(out.split()[:4])


def _voice_key(backend: Any, language: str) -> str:
    """What decides the sound of a wav besides its text, emotion and speaker: backend, model, seed, options,
    the synthesis code's version and the espeak-ng version."""
    models = getattr(backend, "models", None)
    parts = [backend.name, getattr(backend, "model_ref", None) or (models or {}).get(language, ""),
             f"synthesis=v{SYNTHESIS_VERSION}", _engine_version(str(backend.name))]
    for attr in ("seed", "jitter", "tags", "speaker_tag", "codec"):
        if getattr(backend, attr, None) is not None:
            parts.append(f"{attr}={getattr(backend, attr)}")
    return "|".join(str(p) for p in parts if p != "")


def mix_plan(train_df: "pd.DataFrame", synthetic_df: "pd.DataFrame", ratio: float,
             mode: str = "per_class") -> "pd.DataFrame":
    """How many synthetic rows each (corpus, class) of ``train_df`` gets, before sampling.

    Returns one row per corpus and class: ``corpus, language, label, n_train, wanted, available, added``.

    - ``per_class``: ``wanted = round(ratio * n_train)``, ``n_train`` = the class's original rows (not SDS).
    - ``top_up``: ``wanted = round(ratio * (n_max - n_train))`` where ``n_max`` is the corpus's largest class, so
      ``ratio=1`` brings every class up to it (the paper topped MELD's classes up to the neutral count).

    Synthetic rows of a language go only into corpora of that language; two corpora of one language draw
    disjoint rows. ``added = min(wanted, available)``.
    """

    if mode not in MIX_MODES:
        raise ValueError(f"mix mode {mode!r}: expected one of {MIX_MODES}")
    if not ratio >= 0:
        raise ValueError(f"TUG ratio must be >= 0, got {ratio!r}")
    _check_train_only(train_df, "train_df")
    rows = []
    left = synthetic_df.groupby(["language", "label"]).size().to_dict() if len(synthetic_df) else {}
    for corpus, part in train_df.groupby("corpus", sort=True):
        languages = part["language"].unique()
        if len(languages) != 1:
            raise ValueError(f"train corpus {corpus!r} mixes languages {sorted(languages)}; expected one")
        language = languages[0]
        counts = part[part["source"] == "original"]["label"].value_counts()
        n_max = int(counts.max()) if len(counts) else 0
        for label in CLASSES:
            n = int(counts.get(label, 0))
            base = n if mode == "per_class" else n_max - n
            wanted = int(round(ratio * base))
            available = int(left.get((language, label), 0))
            added = min(wanted, available)
            left[(language, label)] = available - added
            rows.append(dict(corpus=corpus, language=language, label=label, n_train=n, wanted=wanted,
                             available=available, added=added))
    return pd.DataFrame(rows, columns=["corpus", "language", "label", "n_train", "wanted", "available", "added"])


def mix_synthetic(train_df: "pd.DataFrame", synthetic_df: "pd.DataFrame", ratio: float,
                  mode: str = "per_class", seed: int = 42) -> "pd.DataFrame":
    """``train_df`` plus seeded synthetic rows per class (see ``mix_plan`` for the counts).

    ``train_df`` is the train split of one or several corpora; ``synthetic_df`` one or several TUG manifests
    (``source="tug"``). Chosen rows take their target corpus's ``corpus`` value and split ``"train"``; their
    ``utt_id`` (``tug_{lang}-train-…``) is kept, so soft labels and features stay keyed. A class with fewer
    synthetic rows than wanted gets all of them and a warning. Rows missing a soft label fall back to one-hot in
    the trainer. The result is a validated manifest; synthetic rows are only ever in the train split.
    """

    if len(synthetic_df) and not (synthetic_df["source"] == "tug").all():
        raise ValueError("synthetic_df must hold only TUG rows (source='tug')")
    plan = mix_plan(train_df, synthetic_df, ratio, mode)
    short = plan[plan["added"] < plan["wanted"]]
    if len(short):
        warnings.warn("TUG mix: fewer synthetic rows than wanted for " + ", ".join(
            f"{r.corpus}/{r.label} ({r.added} of {r.wanted})" for r in short.itertuples()), stacklevel=2)
    rng = np.random.default_rng(seed)
    pool = synthetic_df.sort_values("utt_id", kind="stable").reset_index(drop=True)
    used = np.zeros(len(pool), dtype=bool)
    chosen = []
    for r in plan[plan["added"] > 0].itertuples():
        candidates = np.flatnonzero(((pool["language"] == r.language) & (pool["label"] == r.label)).to_numpy()
                                    & ~used)
        pick = np.sort(rng.choice(candidates, size=r.added, replace=False))
        used[pick] = True
        rows = pool.iloc[pick].copy()
        rows["corpus"] = r.corpus
        rows["split"] = "train"
        chosen.append(rows)
    mixed = concat_manifests([train_df, *chosen])
    assert set(mixed.loc[mixed["source"] == "tug", "split"]) <= {"train"}, "synthetic rows outside train"
    return mixed


def _check_train_only(df: "pd.DataFrame", name: str) -> None:
    bad = df[df["split"] != "train"]
    if len(bad):
        raise ValueError(f"{name}: TUG rows are mixed into train splits only, but row {bad.index[0]} "
                         f"(utt_id={bad['utt_id'].iloc[0]!r}) has split {bad['split'].iloc[0]!r}")


def _parse_per_language(value: str | None) -> str | dict[str, str] | None:
    """``"dia"`` -> ``"dia"``; ``"en=dia,ru=mms"`` -> ``{"en": "dia", "ru": "mms"}``."""
    if value is None or "=" not in value:
        return value
    pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
    return {k.strip(): v.strip() for k, v in pairs}
