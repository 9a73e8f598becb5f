"""benchmarks/real_text.py and real_audio.py: run selection and the generated tables (no data needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _load(script: str):
    """benchmarks/<script>.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{script}_bench", ROOT / "benchmarks" / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench():
    return _load("real_text")


def test_plans_only_regex_and_quick():
    b = _bench()
    quick = b.plans("quick")
    assert quick and all(r["seeds"] == [1] and r["encoder"] == "e5-words" for r in quick)
    ctx = b.plans("full", r"cw=0.5 context=\d mean speaker")
    assert [r["overrides"]["text_context"] for r in ctx] == [2, 4]
    assert all(r["overrides"]["class_weight_power"] == 0.5 and r["overrides"]["text_context_mode"] == "mean"
               and r["overrides"]["text_context_speaker"] for r in ctx)
    weights = b.plans("full", r"^e5-words demo cw=[\d.]+$")
    assert [r["overrides"]["class_weight_power"] for r in weights] == [0.5, 1.0, 0.0]
    assert [len(r["seeds"]) for r in weights] == [3, 3, 3]
    assert b.encoder_params("e5-sentence") == {"text_encoder": "e5-words", "text_max_tokens": 1}


def test_real_audio_table_has_the_ci_over_folds_and_seeds_per_fold_values_and_a_confusion(tmp_path, monkeypatch):
    import json

    a = _load("real_audio")
    assert a.dev_speaker("m5") == "m2" and a.dev_speaker("m2") == "m3"
    cm = json.dumps([[8, 1, 1], [2, 6, 2], [0, 1, 9]])
    rows = [dict(row="audio_only", fold=f, seed=s, uar=60.0 + i, war=60.0, confusion=cm, seconds=10)
            for i, (f, s) in enumerate((f, s) for f in a.SPEAKERS for s in a.SEEDS)]
    rows += [dict(row="mfcc+lr", fold=f, seed=0, uar=50.0, war=50.0, confusion=cm, seconds=1) for f in a.SPEAKERS]
    res, doc = tmp_path / "r.csv", tmp_path / "doc.md"
    pd.DataFrame(rows, columns=a.COLUMNS).to_csv(res, index=False)
    doc.write_text(f"head\n{a.MARK_START}\nold\n{a.MARK_END}\ntail\n")
    for name, value in (("RESULTS", res), ("DOC", doc), ("TABLE", tmp_path / "t.md")):
        monkeypatch.setattr(a, name, value)
    a.main(["--table-only"])
    text = doc.read_text()
    # 12 runs, values 60..71: mean 65.5, 95 % half-width t(11) * sd / sqrt(12) = 2.201 * 3.606 / 3.464 = 2.3
    assert "| audio_only | 12 | 65.5 ± 2.3 | 61.0 | 64.0 | 67.0 | 70.0 |" in text
    assert "| mfcc+lr | 4 | 50.0 ± 0.0 |" in text and "10.34808/h46c-hb44" in text
    assert "| fear | 24 | 72 | 24 |" in text and "\nold\n" not in text and text.endswith("tail\n")


def test_table_only_writes_readme_and_note_from_results(tmp_path, monkeypatch):
    b = _bench()
    rows = [dict(step="s", encoder="e", size="demo", variant="v", seed=i, wf1=w, uar=1, war=2, mf1=3, seconds=10)
            for i, w in ((1, 58.0), (2, 60.0))]
    res = tmp_path / "r.csv"
    pd.DataFrame(rows, columns=b.COLUMNS).to_csv(res, index=False)
    docs = {}
    for name in ("README", "NOTE"):
        docs[name] = tmp_path / f"{name}.md"
        findings = f"{b.FINDINGS_START}\nold\n{b.FINDINGS_END}\n" if name == "NOTE" else ""
        docs[name].write_text(f"head\n{b.MARK_START}\nold\n{b.MARK_END}\n{findings}tail\n")
        monkeypatch.setattr(b, name, docs[name])
    monkeypatch.setattr(b, "RESULTS", res)
    monkeypatch.setattr(b, "TABLE", tmp_path / "t.md")
    b.main(["--table-only"])
    for path in docs.values():
        text = path.read_text()
        assert "old" not in text and "| s | e | demo | v | 2 | 59.0 ± 1.4 |" in text and text.endswith("tail\n")
    assert "The best row over 2 seeds is `s e v`: 59.0 ± 1.4." in docs["NOTE"].read_text()


def _mamba_bench():
    return _load("mamba")


def test_mamba_estimate_counts_the_dense_flops_of_the_stack():
    """Per token and layer: in_proj 2·256·1024, x_proj 2·512·48, dt_proj 2·16·512, out_proj 2·512·256 and the
    depthwise conv 2·512·4 multiply-adds; and the timed matrix products are the Linears' forward and backward."""
    m = _mamba_bench()
    per_token = 2 * 256 * 1024 + 2 * 512 * 48 + 2 * 16 * 512 + 2 * 512 * 256 + 2 * 512 * 4
    assert m.dense_flops(200) == 4 * 8 * 200 * per_token
    products = m.matmul_products(3, batch=2)
    assert len(products) == 12
    linear_flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b in products.values())
    assert 4 * linear_flops == 3 * (m.dense_flops(3, batch=2) - 4 * 2 * 3 * 2 * 512 * 4)  # 4 layers, conv apart


def test_mamba_bench_writes_only_its_section_of_the_page(tmp_path):
    m = _mamba_bench()
    page = tmp_path / "mamba.md"
    page.write_text("head\n<!-- mamba.py --estimate -->\nold\n<!-- end --estimate -->\ntail\n")
    m.write_section("estimate", "| new |", md=page)
    assert page.read_text() == "head\n<!-- mamba.py --estimate -->\n| new |\n<!-- end --estimate -->\ntail\n"
    real = (ROOT / "benchmarks" / "mamba.md").read_text()
    assert all(f"<!-- {m} --{s} -->" in real for s in ("estimate", "inference") for m in ("mamba.py", "end"))


def test_study_profile_sums_each_settings_runs_and_leaves_out_notebook_06s_run(tmp_path):
    import json
    import os

    sp = _load("study_profile")
    wd = tmp_path / "w"
    runs = {"a-s1": (10.0, {"inputs_s": 1.0, "stage1_s": 6.0, "stage2_s": 3.0}), "a-s2": (20.0, {}),
            "b-s1": (5.0, {"inputs_s": 2.0, "stage1_s": 0.5, "stage2_s": 2.5}), "n06": (99.0, {})}
    for name, (wall, phases) in runs.items():
        folder = wd / "train" / name
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"seed": 1, "wall_time_s": wall, "phases": phases}))
        if name != "n06":  # notebook 06's run has no params.yaml: the study only read it
            (folder / "params.yaml").write_text("x: 1\n")
            os.utime(folder / "params.yaml", (1000.0, 1000.0))
            os.utime(folder / "metrics.json", (1000.0 + wall + 2, 1000.0 + wall + 2))
    (wd / "ablations").mkdir()
    pd.DataFrame({"setting": ["a", "a", "b"], "runs": ["a-s1;a-s2", "a-s1;a-s2", "b-s1;n06"]}).to_csv(
        wd / "ablations" / "study.csv", index=False)
    rows = sp.run_rows(wd)
    assert sorted(rows["run"]) == ["a-s1", "a-s2", "b-s1"]
    md = sp.table(rows)
    assert "| a | 2 | 34.0 | 4.0 | 30.0 | 1.0 | 6.0 | 3.0 |" in md  # a run without phases adds to wall only
    assert "| all runs | 3 | 41.0 | 6.0 | 35.0 | 3.0 | 6.5 | 5.5 |" in md


def test_reproduce_compare_puts_two_summaries_side_by_side(tmp_path):
    rc = _load("reproduce_compare")
    before = pd.DataFrame({"notebook": ["01", "07"], "seconds": [10.0, 100.0], "cpu_seconds": [12.0, 190.0],
                           "peak_rss_mb": [500, 700]})
    after = before.assign(seconds=[9.0, 80.0], cpu_seconds=[11.0, 150.0])
    md = rc.compare(before, after)
    assert "| 07 | 100.0 | 80.0 | -20.0 | 190.0 | 150.0 |" in md
    assert "| all notebooks | 110.0 | 89.0 | -21.0 | 202.0 | 161.0 |" in md


def test_findings_pair_the_rows_by_seed_and_name_the_best_against_the_goal():
    b = _bench()
    row = lambda variant, seed, wf1, uar: dict(step="text_only mamba", encoder="e5-words", size="demo",  # noqa
                                               variant=variant, seed=seed, wf1=wf1, uar=uar, war=0, mf1=0, seconds=1)
    res = pd.DataFrame([row("cw=0.5", 1, 60.0, 40.0), row("cw=0.5", 2, 62.0, 41.0), row("cw=0.5", 3, 64.0, 39.0),
                        row("cw=1.0", 1, 59.0, 41.0), row("cw=1.0", 2, 63.0, 41.0), row("cw=1.0", 3, 60.0, 40.0),
                        row("cw=0", 1, 70.0, 10.0)])  # one seed only: not the best of the 3-seed rows
    text = b.findings(res)
    # paired by seed: WF1 +1, -1, +4 -> +1.3, ahead in 2 of 3; UAR -1, 0, -1 -> -0.7
    assert ("`e5-words demo cw=0.5` WF1 62.0 ± 2.0 (UAR 40.0 ± 1.0) against `e5-words demo cw=1.0` 60.7 ± 2.1 "
            "(UAR 40.7 ± 0.6): WF1 +1.3, ahead in 2/3 seeds; UAR -0.7.") in text
    assert "WF1 -10.0, ahead in 0/1 seeds" in text  # cw=0.5 against cw=0, over the one seed both have
    assert ("reached.** The best row over 3 seeds is `text_only mamba e5-words cw=0.5`: 62.0 ± 2.0; the best of all, "
            "one fit: `text_only mamba e5-words cw=0`, 70.0.") in text
    assert "not reached" in b.findings(res.assign(wf1=res["wf1"] - 1))
