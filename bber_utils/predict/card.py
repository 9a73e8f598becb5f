"""The model card (``README.md``) of an exported model, written from its ``config.json``, the run's
``metrics.json`` and its parameter counts: what the model is and how big, what it was trained on (corpora and row
counts), its scores per corpus and split, where and with what it was made, the paper to cite, and what it is for
and not for. A model trained only on the synthetic demo corpus says so in the card's first line (after the
front matter the Hub reads). Plain text in, text out: no torch, no file access.
"""

from __future__ import annotations

from typing import Any

DEMO_PREFIX = "demo_"
METRICS = ("uar", "war", "mf1", "wf1")
CITATION = """@misc{ryumina2025bber,
  title  = {A Novel Data Augmentation Method for Improving the Generalizability of Bilingual Bimodal Emotion
            Recognition Systems},
  author = {Ryumina and others},
  year   = {2025}
}"""
FAMILIES = {
    "audio_only": "a Mamba encoder-classifier over audio features",
    "text_only": "a Mamba encoder-classifier over text features",
    "biformer": "two Mamba encoders (audio, text) and cross-modal Transformer fusion",
    "bigraphformer": "two Mamba encoders, cross-modal Transformer layers and graph-attention fusion",
    "bigatedformer": "two Mamba encoders, cross-modal Transformer layers and a sigmoid-gated fusion",
    "bigatedgraphformer": "two Mamba encoders, cross-modal Transformer layers, graph attention and a gated fusion",
    "bimamba": "two Mamba encoders and a Mamba fusion over both modalities on one time axis",
    "predictions_fusion": "two Mamba encoder-classifiers whose logits are mixed by learned per-class weights",
}


def front_matter(yaml: str) -> str:
    """The card's YAML header (the Hub's metadata) around ``yaml``."""
    return f"---\n{yaml.strip()}\n---\n\n"


def is_demo(metrics: dict | None) -> bool:
    """True when every training corpus of the run is a synthetic demo corpus."""
    corpora = (metrics or {}).get("corpora") or []
    return bool(corpora) and all(str(c).startswith(DEMO_PREFIX) for c in corpora)


def model_card(config: dict[str, Any], metrics: dict | None, parameters: dict[str, int]) -> str:
    """The card's Markdown body (see the module docstring)."""
    name = config["model_name"]
    if is_demo(metrics):
        first = ("**Trained on the synthetic demo corpus only (built offline by bber: template sentences spoken by "
                 "espeak-ng): a demonstration, not a model of real emotional speech — do not use it on real "
                 "recordings.**")
    elif metrics is None:
        first = "**No metrics.json came with this model: its training data and scores are not known.**"
    else:
        first = f"**Trained on {', '.join(metrics.get('corpora') or ['?'])}; scores below.**"
    parts = [first, "", f"# BBER {name}: bilingual bimodal emotion recognition", "",
             *_model_section(config, parameters), *_data_section(metrics), *_results_section(metrics, name),
             *_usage_section(config), *_provenance_section(config, metrics), *_limits_section(metrics),
             "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(parts)


def _model_section(config: dict, parameters: dict[str, int]) -> list[str]:
    name, mc, feats = config["model_name"], config["model_config"], config["features"]
    family = FAMILIES.get(name.removesuffix("_withprob"), name)
    if name.endswith("_withprob"):
        family += ", its logits mixed with the two encoders' logits"
    sizes = ", ".join(f"{k} {mc[k]}" for k in ("hidden_dim", "num_heads", "num_layers", "mamba_layers",
                                                 "mamba_d_state") if k in mc)
    enc = "; ".join(f"{m}: `{feats.get(f'{m}_encoder')}` ({k.get('name', '?')}, width "
                    f"{config['d_' + m]})" for m, k in config["encoders"].items())
    return ["## Model", "",
            f"- `{name}`: {family}.",
            f"- {parameters['total']:,} parameters ({parameters['encoders']:,} in the encoders, "
            f"{parameters['fusion']:,} in the fusion); {sizes}.",
            f"- Inputs: {enc}; audio frames pooled by {feats.get('audio_pool') or 1}, text context "
            f"{feats.get('text_context') or 0} previous turn(s).",
            f"- Outputs: probabilities over {len(config['labels'])} classes, in this order: "
            f"{', '.join(config['labels'])}.", ""]


def _data_section(metrics: dict | None) -> list[str]:
    if not metrics:
        return []
    rows = ["## Training data", "", "| corpus | source | training rows |", "|---|---|---|"]
    for key, n in sorted((metrics.get("n_train") or {}).items()):
        corpus, _, source = key.partition("/")
        rows.append(f"| {corpus} | {source or 'original'} | {n} |")
    soft = metrics.get("soft_labels") or {}
    rows += ["", f"Corpora: {', '.join(metrics.get('corpora') or [])}. LS-LLM soft labels on {soft.get('used', 0)} "
             f"rows (p = {soft.get('p', 0)}). Data fingerprint `{metrics.get('data', '?')}` (`bber train`'s hash of "
             f"the rows, labels and features read).", ""]
    return rows


def _results_section(metrics: dict | None, name: str) -> list[str]:
    if not metrics or not metrics.get("metrics"):
        return []
    rows = ["## Results", "",
            "Percent, on each corpus's own split; early stopping chose the epoch on `dev` (so `dev` is optimistic), "
            "`test` was used for nothing else.", "",
            "| model | corpus | split | UAR | WAR | MF1 | WF1 |", "|---|---|---|---|---|---|---|"]
    sources = {name: metrics["metrics"], **(metrics.get("unimodal") or {})}
    for model, per_corpus in sources.items():
        for corpus, per_split in sorted(per_corpus.items()):
            for split in ("dev", "test"):
                s = per_split.get(split)
                if s:
                    rows.append(f"| {model} | {corpus} | {split} | " + " | ".join(f"{100 * s[m]:.1f}" for m in METRICS)
                                + " |")
    return rows + [""]


def _usage_section(config: dict) -> list[str]:
    return ["## Use", "", "```bash", "# in a checkout of the bber repository, after `make setup`:",
            "bber predict --model THIS_FOLDER_OR_REPO clip.wav --text \"what is said\"",
            "bber predict --model THIS_FOLDER_OR_REPO --onnx clip.wav   # onnxruntime, when model.onnx is here",
            "```", "", "```python", "from bber_utils.predict import Predictor",
            "Predictor(\"THIS_FOLDER_OR_REPO\").predict([\"clip.wav\"], [\"what is said\"])", "```", "",
            f"Features are made by the encoders named above (`{config['features'].get('audio_encoder')}`, "
            f"`{config['features'].get('text_encoder')}`); loading reads `config.json` and `model.safetensors` only "
            f"and runs no code from the folder.", ""]


def _provenance_section(config: dict, metrics: dict | None) -> list[str]:
    src = config.get("source") or {}
    if not metrics:
        return ["## Provenance", "", f"- Run `{src.get('run', '?')}`; no metrics.json, so nothing else is known.", ""]
    env = metrics.get("environment") or {}
    packages, lock = env.get("packages") or {}, env.get("lock") or {}
    return ["## Provenance", "",
            f"- Run `{metrics.get('run')}`, seed {metrics.get('seed')}, best epoch {metrics.get('best_epoch')}, "
            f"{float(metrics.get('wall_time_s') or 0):.0f} s of training on `{metrics.get('device')}`.",
            f"- Code: bber commit `{metrics.get('git_commit')}`.",
            f"- Environment: Python {env.get('python')}, torch {packages.get('torch')}, {env.get('platform')}, "
            f"CPU {env.get('cpu')}; lock `{lock.get('file')}` sha256 `{str(lock.get('sha256'))[:16]}`.", ""]


def _limits_section(metrics: dict | None) -> list[str]:
    demo = ("- This model learnt the synthetic demo corpus (template sentences spoken by espeak-ng with emotional "
            "prosody); its numbers say that the pipeline works, not how well it recognises real people.\n"
            if is_demo(metrics)
            else "")
    return ["## Intended use and limits", "",
            "- Research on emotion recognition from English or Russian speech and its transcript: the seven "
            "classes of MELD and RESD, one utterance of a few seconds at a time.",
            f"{demo}- Not for decisions about people (hiring, health, policing, surveillance): emotion labels of "
            "acted or TV speech are not what a person feels, and accuracy differs by corpus, speaker and language.",
            "- Other languages, long recordings, overlapping speakers and noisy audio were not tested; a clip "
            "over 60 s is better scored in windows (`--window`).", ""]
