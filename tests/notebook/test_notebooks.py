"""Every notebook executed in order by papermill on configs/smoke.yaml, and what each one writes.

The session fixture ``smoke_run`` (conftest.py) runs the whole sequence once; each test below checks the
artefacts of one notebook, not only that it ran.
"""

from __future__ import annotations

import json
import re

import nbformat
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bber_utils.corpora.manifest import load_manifest
from bber_utils.core.labels import CLASSES

pytestmark = pytest.mark.notebook

NOTEBOOKS = ["01_prepare_data", "02_extract_features", "03_sds", "04_tug", "05_ls_llm", "06_train",
             "07_ablations", "08_results", "09_inference", "10_your_corpus"]


def _outputs(path) -> list[dict]:
    nb = nbformat.read(str(path), as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_every_notebook_ran_without_errors(smoke_run):
    dirs, runs = smoke_run
    assert [r.notebook for r in runs] == NOTEBOOKS
    assert all(r.status == "ok" for r in runs)
    summary = pd.read_csv(dirs.notebooks / "summary.csv")
    assert list(summary["notebook"]) == NOTEBOOKS and (summary["seconds"] > 0).all()
    for name in NOTEBOOKS:
        outs = _outputs(dirs.notebooks / f"{name}.ipynb")
        assert outs, f"{name} shows nothing"
        assert not [o for o in outs if o.get("output_type") == "error"], name


def test_outputs_are_clean_and_interactive_cells_show_their_default_state(smoke_run):
    """No kernel start-up warnings in any cell (07 runs 06 in nested kernels); the ipywidgets cells of 03, 04
    and 09 ran unattended and stored a widget view."""
    dirs, _ = smoke_run
    for name in NOTEBOOKS:
        text = json.dumps(_outputs(dirs.notebooks / f"{name}.ipynb"))
        assert "[IPKernelApp] WARNING" not in text, name
    for name in ("03_sds", "04_tug", "09_inference"):
        outs = _outputs(dirs.notebooks / f"{name}.ipynb")
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs), name


def test_06_walks_through_the_model_and_the_metrics(smoke_run):
    """The whole model on real utterances: shapes of the chosen, graph and gated variants, the graph, the gate, one
    cross-attention map, the scan's code, audio_pool, the optimiser; the takeaways computed; bars that close."""
    dirs, _ = smoke_run
    text = json.dumps(_outputs(dirs.notebooks / "06_train.ipynb"), ensure_ascii=False)
    for needle in ("cross.layers.0", "(model)", "bigraphformer", "paper sizes", "imbalanced", "best dev epoch",
                   "graph.conv1", "gate", "audio ↔ text", "_sequential_steps", "AdamW", "audio_pool",
                   "Takeaway: each row is one audio step", "Takeaway: the gate takes", "largest confusions",
                   "default (the paper's)", "demo_en-test"):
        assert needle in text, needle
    assert "rows x 1 columns" not in text  # the config table: only what differs from the paper, shown whole
    for name in ("06_architecture.png", "06_cross_attention.png", "06_gate.png"):
        assert (dirs.figures / name).stat().st_size > 5000, name
    streams = "".join(o.get("text", "") for o in _outputs(dirs.notebooks / "06_train.ipynb")
                      if o.get("output_type") == "stream")
    bars = [frame for frame in re.split(r"[\r\n]", streams) if "%|" in frame]
    assert bars and all("100%" in b for b in bars), bars  # early stopping closes its bar at its real end


def test_exercises_are_kept_and_not_executed(smoke_run):
    """`bber reproduce` skips the exercise cells (skip-execution) but keeps them, with the collapsed answers."""
    dirs, runs = smoke_run
    for name in NOTEBOOKS:
        nb = nbformat.read(str(dirs.notebooks / f"{name}.ipynb"), as_version=4)
        exercises = [c for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
        assert exercises, name
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in exercises), name
        assert any(c.metadata.get("jupyter", {}).get("source_hidden") for c in nb.cells), name


def test_every_figure_of_the_demo_corpus_says_so(smoke_run):
    """Each figure title carries " — synthetic demo" on the demo corpus: the executed notebooks pass the tag that
    ``plots.synthetic_tag`` computes from the work folder (here: demo corpora)."""
    from bber_utils.notebook import plots

    dirs, _ = smoke_run
    assert plots.synthetic_tag(dirs.root) == plots.SYNTHETIC_TAG
    pngs = {p.name for p in dirs.figures.glob("*.png")}
    for prefix in ("01_", "02_", "03_", "04_", "05_", "06_", "08_", "09_"):
        assert any(n.startswith(prefix) for n in pngs), prefix


def test_01_writes_bilingual_manifests_in_every_split(smoke_run):
    dirs, _ = smoke_run
    frames = {p.stem: load_manifest(p) for p in dirs.manifests.glob("*.parquet")}
    assert set(frames) == {f"{c}_{s}" for c in ("demo_en", "demo_ru") for s in ("train", "dev", "test")}
    for name, df in frames.items():
        lang = "en" if name.startswith("demo_en") else "ru"
        assert len(df) and (df["language"] == lang).all() and (df["source"] == "original").all()
        assert df["text"].str.len().gt(0).all()
    for corpus in ("demo_en", "demo_ru"):
        assert set(frames[f"{corpus}_train"]["label"]) == set(CLASSES)
        ids = [set(frames[f"{corpus}_{s}"]["utt_id"]) for s in ("train", "dev", "test")]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]), "splits overlap"
    wav, sr = sf.read(frames["demo_ru_train"]["audio_path"].iloc[0])
    assert sr == 16000 and wav.ndim == 1 and np.abs(wav).max() > 0.01
    assert (dirs.manifests / "skips.csv").exists()


def test_02_stores_features_for_every_utterance(smoke_run):
    from bber_utils.features import FeatureStore

    dirs, _ = smoke_run
    stores = {p.name.split("-")[0]: FeatureStore(p) for p in dirs.features.iterdir() if p.is_dir()}
    assert {"audio", "text"} <= set(stores)
    ids = pd.concat([load_manifest(p) for p in dirs.manifests.glob("*.parquet")])["utt_id"]
    for modality, store in stores.items():
        for utt in ids:
            x = store[utt]
            assert x.ndim == 2 and x.shape[0] >= 1 and x.shape[1] == store.dim and np.isfinite(x).all()


def test_03_sds_merges_same_label_partners(smoke_run):
    dirs, _ = smoke_run
    for corpus in ("demo_en", "demo_ru"):
        df = load_manifest(dirs.sds / f"{corpus}_train_sds.parquet")
        merged = df[df["source"] == "sds"]
        assert len(merged), f"{corpus}: nothing merged"
        by_id = df.set_index("utt_id")
        for row in merged.itertuples():
            parts = row.components.split(";")
            assert len(parts) >= 2 and set(by_id.loc[parts, "label"]) == {row.label}
            assert by_id.loc[parts[0], "duration_s"] < row.duration_s <= 8.0 + 0.01


def test_04_tug_speaks_every_emotion_in_both_languages(smoke_run):
    dirs, _ = smoke_run
    for lang in ("en", "ru"):
        df = load_manifest(dirs.tug / f"tug_{lang}.parquet")
        assert (df["source"] == "tug").all() and (df["language"] == lang).all() and (df["split"] == "train").all()
        assert set(df["label"]) == set(CLASSES)
        for path in df["audio_path"]:
            wav, sr = sf.read(path)
            assert sr == 16000 and np.sqrt(np.mean(wav ** 2)) > 1e-3, f"silent synthetic clip {path}"


def test_05_soft_labels_are_valid_distributions_with_the_true_label_highest(smoke_run):
    dirs, _ = smoke_run
    table = pd.read_parquet(dirs.ls_llm / "soft_labels.parquet")
    train = pd.concat([load_manifest(p) for p in dirs.manifests.glob("*_train.parquet")])
    assert set(train["utt_id"]) <= set(table["utt_id"])
    probs = table[list(CLASSES)].to_numpy(float)
    assert np.allclose(probs.sum(1), 1, atol=1e-4) and (probs >= 0).all()
    truth = train.set_index("utt_id").loc[table["utt_id"], "label"].map(CLASSES.index).to_numpy()
    assert (probs.argmax(1) == truth).all()
    assert {"backend", "model", "prompt_version"} <= set(table.columns)


def test_06_training_run_folder(smoke_run):
    dirs, _ = smoke_run
    runs = [p for p in dirs.train.iterdir() if p.is_dir() and not p.name.startswith("_")
            and (p / "metrics.json").exists()]
    # notebook 06's own run (the study's runs keep 06_train.ipynb, or train.log with the process runner)
    trained = [p for p in runs if not (p / "06_train.ipynb").exists() and not (p / "train.log").exists()]
    assert len(trained) == 1, f"notebook 06's run folder: {trained}"
    m = json.loads((trained[0] / "metrics.json").read_text())
    assert {"run", "model", "seed", "config", "git_commit", "wall_time_s", "best_epoch", "metrics"} <= set(m)
    for corpus in ("demo_en", "demo_ru"):
        for split in ("dev", "test"):
            s = m["metrics"][corpus][split]
            assert 0 <= s["wf1"] <= 1 and np.array(s["confusion"]).shape == (7, 7)
            assert s["mean"] == pytest.approx(np.mean([s[k] for k in ("uar", "war", "mf1", "wf1")]))
    assert {"audio_only", "text_only"} <= set(m["unimodal"])
    assert (trained[0] / "best.pt").exists() and (trained[0] / "history.csv").exists()


def test_07_and_08_study_table_and_figures(smoke_run):
    dirs, _ = smoke_run
    study = pd.read_csv(dirs.root / "ablations" / "study.csv")
    settings = json.loads((dirs.root / "ablations" / "settings.json").read_text())
    assert {(s["study"], s["setting"]) for s in settings} == set(zip(study["study"], study["setting"]))
    assert {"modality", "fusion"} <= set(study["study"]) and study["wf1"].between(0, 1).all()
    assert study["runs"].str.len().gt(0).all() and study["dev_mean"].between(0, 1).all()
    for name in ("08_confusion_best.png", "08_ablation_wf1.png", "08_ablation_uar.png"):
        assert (dirs.figures / name).stat().st_size > 5000, name
    table = (dirs.figures / "08_study_table.md").read_text(encoding="utf-8")
    assert "| study | setting | seeds |" in table and "synthetic demo corpus" in table
    outs = json.dumps(_outputs(dirs.notebooks / "08_results.ipynb"))
    assert "only (not published to the repository" in outs
    assert "trained on MELD or RESD" in outs and "<td>\\u2013</td>" not in outs  # one sentence, not a table of dashes
    cells = nbformat.read(str(dirs.notebooks / "08_results.ipynb"), as_version=4).cells
    assert any("Conclusions" in c.source for c in cells if c.cell_type == "markdown")
    assert (dirs.figures / "08_architecture.png").exists()
    assert "**What fusion adds.** BiFormer \\u2212 audio only" in outs and "of 3 seeds" not in outs  # computed
    assert "ahead on" in outs and "of 1 seeds" in outs  # the smoke study has one seed
    assert "**Findings**" in table


def test_07_gets_the_profile_as_a_file_not_a_dump(smoke_run):
    """The executed 07 shows one short injected line (the file's path), not every key of the profile."""
    dirs, _ = smoke_run
    nb = nbformat.read(str(dirs.notebooks / "07_ablations.ipynb"), as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    line = next(ln for ln in injected.source.splitlines() if ln.startswith("profile_params"))
    assert len(line) < 200 and line.endswith('07_ablations.profile.yaml"'), line
    assert json.loads((dirs.notebooks / "07_ablations.profile.yaml").read_text())["profile"] == "smoke"


def test_07_reuses_the_run_of_notebook_06(smoke_run):
    """"all" and the listed corpora hash alike: notebook 06's run is one of the study's runs, trained once
    (the study's own runs keep 06_train.ipynb, or train.log with the process runner)."""
    dirs, _ = smoke_run
    study = pd.read_csv(dirs.root / "ablations" / "study.csv")
    own = [p.name for p in dirs.train.iterdir() if (p / "metrics.json").exists() and not p.name.startswith("_")
           and not (p / "06_train.ipynb").exists() and not (p / "train.log").exists()]
    assert own and set(own) <= set(";".join(study["runs"]).split(";"))


def test_09_predicts_demo_clips_with_three_views(smoke_run):
    dirs, _ = smoke_run
    assert (dirs.figures / "09_inference_probabilities.png").exists()
    html = "".join(o.get("data", {}).get("text/plain", "") for o in _outputs(dirs.notebooks / "09_inference.ipynb"))
    assert "true label" in html and any(c in html for c in CLASSES)


def test_09_uses_the_run_08_chose_on_dev_and_shows_a_right_and_a_wrong_clip(smoke_run):
    """Not the newest run (07's last one): the best dev mean over corpora, as notebook 08 reports it."""
    from bber_utils.study import best_run, load_registry

    dirs, _ = smoke_run
    chosen = best_run(load_registry(dirs.root), split="dev")
    outs = json.dumps(_outputs(dirs.notebooks / "09_inference.ipynb"))
    assert f"train/{chosen}/best.pt (the best run on dev, as in notebook 08)" in outs
    assert chosen in json.dumps(_outputs(dirs.notebooks / "08_results.ipynb"))
    newest = max((p for p in dirs.train.glob("*/best.pt") if not p.parent.name.startswith("_")),
                 key=lambda p: p.stat().st_mtime).parent.name
    assert chosen != newest or "the best run on dev" in outs
    assert "clips right" in outs and (dirs.figures / "09_right_and_wrong.png").exists()


# --------------------------------------------------------------------------- parameters cells: one source (issue 29.4)
def _cells(name: str) -> tuple[str, str]:
    """The source of the notebook's ``parameters`` cell and of the code cell after it."""
    from bber_utils.core.paths import REPO_ROOT

    nb = json.loads((REPO_ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    i = next(i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    return "".join(code[i]["source"]), "".join(code[i + 1]["source"])


@pytest.fixture
def run_cells(monkeypatch, tmp_path):
    """Runs a notebook's first cells (``_run_cells``) with its work folder under ``tmp_path``, not the checkout."""
    from bber_utils.core import paths

    monkeypatch.setattr(paths, "workdir_path", lambda workdir: tmp_path / workdir)  # run_dirs' root
    return _run_cells


def _run_cells(name: str, injected: dict | None = None, edit: dict | None = None) -> dict:
    """The namespace after the parameters cell (then ``edit``: a reader's change), papermill's injected values
    (none: JupyterLab) and the cell after it."""
    params, after = _cells(name)
    ns: dict = {}
    exec(params, ns)
    ns.update(edit or {})
    ns.update(injected or {})
    exec(after, ns)
    return ns


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameters_cell_holds_the_demo_profiles_values(name):
    """A notebook opened in JupyterLab and run without papermill does what ``make reproduce`` does: its parameters
    cell takes its values from the demo profile (07 used to hold one seed, SDS 0.5 and four models)."""
    import ast

    from bber_utils.train import load_profile

    demo = load_profile("demo")
    cell = {t.id: ast.literal_eval(a.value) for a in ast.parse(_cells(name)[0]).body if isinstance(a, ast.Assign)
            for t in a.targets}
    assert cell.pop("profile_params", None) is None
    assert {k: v for k, v in cell.items() if demo[k] != v} == {}


@pytest.mark.parametrize("profile", ["demo", "smoke", "paper"])
def test_06_trains_every_key_of_the_profile_in_jupyterlab_and_under_papermill(profile, run_cells):
    """Notebook 06 declares only what a reader changes; its training config is the whole profile's either way, and
    a value edited in its parameters cell wins."""
    from bber_utils.core.papermill import injected_parameters
    from bber_utils.core.paths import REPO_ROOT
    from bber_utils.train import TrainConfig, load_profile

    want = TrainConfig.from_dict(load_profile(profile)).to_dict()
    params = load_profile(profile)
    papermill = run_cells("06_train", injected_parameters(REPO_ROOT / "notebooks" / "06_train.ipynb", params))
    assert TrainConfig.from_dict(papermill["cfg"]).to_dict() == want
    if profile == "demo":
        jupyter = run_cells("06_train")
        assert TrainConfig.from_dict(jupyter["cfg"]).to_dict() == want
        edited = run_cells("06_train", edit={"epochs": 5, "label_smoothing": 0.1})  # label_smoothing: added
        assert TrainConfig.from_dict(edited["cfg"]).to_dict() == {**want, "epochs": 5, "label_smoothing": 0.1}


def test_07_runs_the_demo_study_in_jupyterlab(run_cells):
    from bber_utils.train import load_profile

    ns = run_cells("07_ablations")
    assert ns["base"] == {**load_profile("demo"), "workdir": ns["base"]["workdir"], "progress": False}
    assert (ns["ablation_seeds"], ns["ablation_augment"]["sds_ratio"]) == ([42, 43, 44], 1.0)


def test_10_trains_a_three_class_corpus_from_one_table_speaker_independently(smoke_run):
    """Notebook 10 reads the Polish corpus when ../shared has it, else builds its table from the demo clips of three
    classes: a corpus with its own label set, split by speaker, scored over its three classes, wrong clips."""
    from bber_utils.notebook.corpus import polish_folder

    dirs, _ = smoke_run
    corpus_dir = dirs.root.parent / f"{dirs.root.name}-your_corpus"
    name = "polish" if polish_folder() is not None else "demo_three"
    manifests = {s: load_manifest(corpus_dir / "manifests" / f"{name}_{s}.parquet") for s in ("train", "dev", "test")}
    speakers = [set(df["speaker"]) for df in manifests.values()]
    assert all(speakers) and not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert set().union(*(set(df["label"]) for df in manifests.values())) <= {"anger", "fear", "neutral"}
    metrics = json.loads(next((corpus_dir / "train").glob("audio_only-*/metrics.json")).read_text())
    assert metrics["classes"] == {name: ["neutral", "anger", "fear"]}
    assert metrics["metrics"][name]["test"]["classes"] == ["neutral", "anger", "fear"]
    text = json.dumps(_outputs(dirs.notebooks / "10_your_corpus.ipynb"))
    for needle in ("label set: neutral, anger, fear", "'feer' is not one of the 7 classes", "test clips wrong"):
        assert needle in text, needle
    assert not (dirs.manifests / f"{name}_train.parquet").exists()  # the profile's work folder is untouched
