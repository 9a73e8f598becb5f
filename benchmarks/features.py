"""Feature-extraction benchmark (results in benchmarks/features.md).

1. Which offline text encoder separates the demo corpus's classes better: logistic regression on mean-pooled
   features, 5-fold stratified cross-validated macro F1, per language (texts from the demo corpus plan, so no
   audio is needed).
2. Extraction throughput of the offline defaults (logmel + the chosen text encoder) on the demo corpus, cold
   (empty store) and warm (everything cached), through ``extract_all``.
3. The same probe on pooled log-mel features, with and without per-utterance normalisation.

    .venv/bin/python benchmarks/features.py [--per-class 40] [--workdir /tmp/bber_bench_features]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def probe_f1(X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Mean and std of 5-fold cross-validated macro F1 of a logistic regression on standardised X."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_score(clf, X, y, cv=cv, scoring="f1_macro")
    return float(scores.mean()), float(scores.std())


def compare_text_encoders(per_class: int, seed: int = 42) -> pd.DataFrame:
    from bber_utils.corpora.demo import plan_rows
    from bber_utils.features import build_text_encoder

    rows = []
    for lang in ("en", "ru"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = pd.DataFrame(plan_rows(lang, per_class, seed, 0.4, 0.4))
        texts, y = plan["text"].tolist(), plan["label"].to_numpy()
        for spec in ("e5-words", "hashgram"):
            enc = build_text_encoder(spec)
            t = time.perf_counter()
            X = np.stack([f.mean(0) for f in enc.encode(texts)])
            secs = time.perf_counter() - t
            f1, sd = probe_f1(X, y)
            worded = plan["case"].isin(["neutral", "both", "flat_prosody"]).to_numpy()  # text carries the label
            f1_w, _ = probe_f1(X[worded], y[worded])
            rows.append({"language": lang, "encoder": spec, "utterances": len(texts), "dim": enc.dim,
                         "macro_f1": round(f1, 3), "sd": round(sd, 3), "macro_f1_emotional_wording": round(f1_w, 3),
                         "encode_s": round(secs, 2)})
    return pd.DataFrame(rows)


def e5_parts(per_class: int, seed: int = 42) -> pd.DataFrame:
    """The two parts of e5-words on their own: per-word vectors, the sentence vector, and both (the default)."""
    from bber_utils.corpora.demo import plan_rows
    from bber_utils.features import text_encoders
    from bber_utils.features.text_encoders import E5WordsEncoder, words

    rows = []
    for lang in ("en", "ru"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = pd.DataFrame(plan_rows(lang, per_class, seed, 0.4, 0.4))
        texts, y = plan["text"].tolist(), plan["label"].to_numpy()
        text_encoders._E5_WORDS.clear()
        t = time.perf_counter()
        feats = E5WordsEncoder(sentence_vector=False).encode(texts)
        words_s = time.perf_counter() - t
        t = time.perf_counter()
        sent = text_encoders.load_e5().passage(texts)
        sent_s = time.perf_counter() - t
        both = np.stack([np.vstack([s[None], f]).mean(0) for s, f in zip(sent, feats)])
        n_words = len({w for t in texts for w in words(t)})
        for name, X, secs in [("words only", np.stack([f.mean(0) for f in feats]), words_s),
                              ("sentence vector only", sent, sent_s), ("sentence + words (default)", both, None)]:
            f1, sd = probe_f1(X, y)
            rows.append({"language": lang, "features": name, "macro_f1": round(f1, 3), "sd": round(sd, 3),
                         "encode_s": None if secs is None else round(secs, 1), "unique_words": n_words})
    return pd.DataFrame(rows)


def throughput(workdir: Path, per_class: int, text_spec: str) -> tuple[pd.DataFrame, dict]:
    from bber_utils.corpora import prepare
    from bber_utils.features import extract_all

    t = time.perf_counter()
    prepare("demo", workdir, demo_per_class=per_class, progress=False)
    prep_s = time.perf_counter() - t
    from bber_utils.features import build_audio_encoder, build_text_encoder, ensure_features, text_encoders

    shutil.rmtree(workdir / "features", ignore_errors=True)
    text_encoders._E5_WORDS.clear()  # a cold start: no word vectors cached in this process
    t = time.perf_counter()
    cold = extract_all(workdir, "logmel", text_spec, progress=False)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    warm = extract_all(workdir, "logmel", text_spec, progress=False)
    warm_s = time.perf_counter() - t
    n = int(cold.summary["rows"].sum())
    audio_s = float(sum(df["duration_s"].sum() for df in cold.manifests.values()))
    assert int(warm.summary[["audio_extracted", "text_extracted"]].to_numpy().sum()) == 0
    info = {"utterances": n, "audio_seconds": round(audio_s, 1), "prepare_s": round(prep_s, 1),
            "cold_s": round(cold_s, 2), "warm_s": round(warm_s, 3), "speedup": round(cold_s / warm_s, 1),
            "utt_per_s_cold": round(n / cold_s, 1), "audio_x_realtime_cold": round(audio_s / cold_s, 1)}
    # Per modality, cold, over all manifests at once.
    everything = pd.concat(cold.manifests.values(), ignore_index=True)
    scratch = workdir / "features_scratch"
    for modality, enc in [("audio", build_audio_encoder("logmel")), ("text", build_text_encoder(text_spec))]:
        shutil.rmtree(scratch, ignore_errors=True)
        text_encoders._E5_WORDS.clear()
        t = time.perf_counter()
        ensure_features(everything, modality, enc, scratch, progress=False)
        info[f"{modality}_cold_s"] = round(time.perf_counter() - t, 2)
    shutil.rmtree(scratch, ignore_errors=True)
    return cold.summary, info, cold


def audio_probe(workdir: Path, cold) -> pd.DataFrame:
    from bber_utils.features import build_audio_encoder, ensure_features

    df = pd.concat(cold.manifests.values(), ignore_index=True)
    rows = []
    for norm in ("none", "utterance"):
        store = ensure_features(df, "audio", build_audio_encoder("logmel", normalize=norm), workdir / "features",
                                progress=False)
        for lang in ("en", "ru"):
            part = df[df.language == lang]
            X = np.stack([np.concatenate([store[u].mean(0), store[u].std(0)]) for u in part.utt_id])
            f1, sd = probe_f1(X, part.label.to_numpy())
            rows.append({"language": lang, "logmel normalize": norm, "macro_f1 (mean+std pooled)": round(f1, 3),
                         "sd": round(sd, 3)})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    """A pipe table (no tabulate needed)."""
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--workdir", default="/tmp/bber_bench_features")
    ap.add_argument("--skip-audio", action="store_true", help="only part 1")
    ap.add_argument("--skip-text", action="store_true", help="skip part 1 and use --text-encoder")
    ap.add_argument("--text-encoder", default="e5-words")
    ap.add_argument("--e5-parts", action="store_true", help="only the e5-words parts comparison")
    args = ap.parse_args()
    if args.e5_parts:
        print(markdown(e5_parts(args.per_class)))
        return
    pd.set_option("display.width", 200)
    best = args.text_encoder
    if not args.skip_text:
        text = compare_text_encoders(args.per_class)
        print("## text encoders (5-fold CV macro F1 of a logistic regression on mean-pooled features)")
        print(markdown(text), flush=True)
        best = text.groupby("encoder")["macro_f1"].mean().idxmax()
        print(f"\nbetter on average: {best}", flush=True)
    if args.skip_audio:
        return
    summary, info, cold = throughput(Path(args.workdir), args.per_class, best)
    print("\n## extraction with the offline defaults (logmel + %s)" % best)
    print(markdown(summary))
    print(info)
    print("\n## log-mel probe")
    print(markdown(audio_probe(Path(args.workdir), cold)))


if __name__ == "__main__":
    main()
