"""The notebook parameters that are not training keys, with their defaults: one dataclass per notebook, in the
order of the notebooks (the training keys, notebook 06's, are ``train.config.TrainConfig``'s, the model sizes
``models.config.ModelConfig``'s; ``train.profiles.load_profile`` merges all of them under a profile).

The defaults are the paper's, except where the paper's value needs a download, a server, an API key or trusting
a model's code: an LLM, a TTS or an ASR model stays unset or offline here and ``configs/paper.yaml`` names it
(a library default never fetches a model or trusts remote code). ``configs/demo.yaml`` and ``configs/smoke.yaml``
hold what they change. ``field_comments`` reads each field's comment: the one-line help of ``bber train --help``
and ``bber reproduce --help``.

These are plain data in one module at the bottom layer, rather than one dataclass in each package that owns a
stage: the keys are the notebooks' names for the arguments of the package's functions (which keep their own
signatures), and the loader of profiles must see them from the layer of ``bber train`` and ``bber sweep``, below
the study and notebook layers whose keys are here.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PrepareParams:
    """01_prepare_data."""

    dataset: str = "union"                # demo | meld | resd | union (MELD + RESD, the paper's)
    meld_root: str | None = None          # folder holding {train,dev,test}_sent_emo.csv and MELD.Raw/
    resd_root: str | None = None          # folder holding data/{train,test}-*.parquet, or wavs + train.csv/test.csv
    demo_per_class: int = 40              # demo corpus: utterances per class, language and split (train)
    limit: int = 0                        # keep at most N utterances per split (0 = all)


@dataclass
class ExtractParams:
    """02_extract_features (the encoders are training keys: the trainer extracts what is missing)."""

    asr_model: str | None = None          # fill empty transcripts: Whisper hub id / folder | whisper-base-bundled


@dataclass
class SdsParams:
    """03_sds (SDS's lengths and ratio for training are training keys)."""

    sds_ratio_preview: float = 0.5        # notebook 03: fraction of short train utterances merged in the preview


@dataclass
class TugParams:
    """04_tug."""

    tug_template_source: str = "builtin"  # builtin | openai | transformers (LLM-written templates; builtin fallback)
    tug_llm_model: str | None = None      # the LLM for openai/transformers: server model name, hub id or folder
    tug_base_url: str | None = None       # OpenAI-compatible server URL (null: OpenAI, key from OPENAI_API_KEY)
    tug_per_class: int = 4500             # per emotion and language: tops MELD's smallest class up (paper: 4441)
    tug_languages: list = field(default_factory=lambda: ["en", "ru"])  # languages of the synthetic corpus
    tug_tts: Any = "espeak"               # espeak | mms | dia, or one per language: {en: dia, ru: mms}
    tug_tts_model: Any = None             # TTS hub id or folder (or one per language); null: the backend's
    tug_ratio_preview: float = 1.0        # notebook 04's mixing preview (the trainer uses tug_ratio / tug_mode)
    tug_mode_preview: str = "top_up"      # per_class | top_up


@dataclass
class LsLlmParams:
    """05_ls_llm."""

    ls_llm_backend: str = "lexicon"       # lexicon (offline, not an LLM) | transformers | openai | reference
    ls_llm_model: str | None = None       # hub id or folder (transformers); model name on the server (openai)
    ls_llm_mode: str = "generate"         # generate (prompt + parse) | logits (class-word next-token probabilities)
    ls_llm_base_url: str | None = None    # OpenAI-compatible server URL (openai), e.g. http://localhost:8000/v1
    ls_llm_reference_csv: str | None = None  # a published *_emotions_*.csv (reference)
    ls_llm_policy: str = "swap"           # true label not highest: swap it with the max | reject
    ls_llm_batch_size: int = 16           # utterances per LLM batch
    ls_llm_limit: int = 0                 # label at most N train utterances per corpus (0 = all)
    ls_llm_fallback: bool = False         # use the lexicon when the LLM cannot be loaded or reached


@dataclass
class StudyParams:
    """07_ablations."""

    ablation_seeds: list = field(default_factory=lambda: [1, 2, 3])  # seeds per setting: mean ± 95 % CI
    ablation_fusion_models: list = field(default_factory=lambda: [   # the fusion types compared
        "biformer", "bigraphformer", "bigatedformer", "bigatedgraphformer", "bimamba", "predictions_fusion",
        "biformer_withprob"])
    ablation_augment: dict = field(default_factory=lambda: {  # each alone on the fusion model, then all together
        "sds_ratio": 0.5, "tug_ratio": 0.005, "ls_llm_p": 0.2})
    ablation_single_corpus: bool = True   # also train on each corpus alone
    ablation_epochs: int | None = None    # null: the profile's epochs
    search_mode: str = "greedy"           # none | greedy | grid: augmentation ratios chosen per corpus on dev
    search_space: dict = field(default_factory=lambda: {  # the ratios searched
        "sds_ratio": [0.0, 0.5, 1.0], "tug_ratio": [0.0, 0.5], "ls_llm_p": [0.0, 0.2, 0.5]})
    search_seeds: list = field(default_factory=lambda: [1])  # seeds of the search runs
    ablation_workers: int = 1             # parallel training runs (numbers do not depend on it)
    study_runner: str = "process"         # process (bber train per run) | notebook (notebook 06 per run) | submitit
    slurm: dict | None = None             # submitit: each run's SLURM resources (docs/scaling.md#slurm)


@dataclass
class ResultsParams:
    """08_results."""

    results_split: str = "test"           # the split the results are read on
    publish_figures: bool = False         # also write the figures to the repository's figures/ (and the README)


@dataclass
class InferenceParams:
    """09_inference."""

    inference_paths: Any = None           # audio files, folders or CSVs (path[,text]); null: a few demo test clips
    inference_texts: Any = None           # transcripts for inference_paths (null: ASR)
    inference_checkpoint: str | None = None  # best.pt or a run folder; null: the newest run of the work folder
    inference_per_language: int = 2       # demo clips per language when inference_paths is null


@dataclass
class YourCorpusParams:
    """10_your_corpus (the training keys are the profile's; these choose the table and what is trained on it)."""

    table_csv: str | None = None          # your table (CSV or Parquet); null: the example (Polish corpus, else demo)
    corpus_name: str = "mine"             # the corpus name of your table's rows
    columns: dict = field(default_factory=dict)    # role -> your column, e.g. {"audio_path": "file"}
    label_map: dict = field(default_factory=dict)  # your label -> one of the seven classes, e.g. {"angry": "anger"}
    classes: str | None = None            # the corpus's label set, e.g. "anger,fear,neutral" (null: its labels')
    language: str = "en"                  # ISO 639-1 code of your table's rows
    shared_root: str | None = None        # where the example looks for the Polish corpus (null: ../shared)
    corpus_workdir: str | None = None     # null: "<workdir>-your_corpus", beside the profile's work folder
    dev_fraction: float = 0.2             # share of the speakers in dev ...
    test_fraction: float = 0.2            # ... and in test
    corpus_model: str = "audio_only"      # the model trained on the corpus (the example's text carries no emotion)
    corpus_audio_norm: str = "speaker"    # its audio_norm (what the real-audio benchmark found best)
    corpus_pooling: str = "stats"         # its pooling (mean | stats | attention)
    max_wrong_clips: int = 6              # wrong test clips shown with audio players


NOTEBOOK_PARAMETERS = (PrepareParams, ExtractParams, SdsParams, TugParams, LsLlmParams, StudyParams, ResultsParams,
                       InferenceParams, YourCorpusParams)


def defaults(cls) -> dict[str, Any]:
    """``{field: default}`` of a parameter dataclass (a fresh copy of list and dict defaults)."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(cls)}


def field_comments(cls) -> dict[str, str]:
    """``{field: the comment after it in the class body}`` ("" where there is none)."""
    src = inspect.getsource(cls)
    line_field: dict[int, str] = {}
    for m in re.finditer(r"^\s{4}(\w+)\s*:", src, re.M):
        line_field[src.count("\n", 0, m.start()) + 1] = m.group(1)
    comments: dict[str, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT and tok.start[0] in line_field and tok.start[1] > 4:
            comments[line_field[tok.start[0]]] = tok.string.lstrip("#").strip()
    return {f.name: comments.get(f.name, "") for f in dataclasses.fields(cls)}
