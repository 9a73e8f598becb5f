"""benchmarks/real_text.py: run selection and the generated tables (no data needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("real_text_bench", ROOT / "benchmarks" / "real_text.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plans_only_regex_and_quick():
    b = _bench()
    quick = b.plans("quick")
    assert quick and all(r["seeds"] == [1] and r["encoder"] == "e5-words" for r in quick)
    ctx = b.plans("full", r"cw=0\.5 text_context=\d mean")
    assert [r["overrides"]["text_context"] for r in ctx] == [1, 2, 4]
    assert all(r["overrides"]["class_weight_power"] == 0.5 and r["overrides"]["text_context_mode"] == "mean"
               for r in ctx)


def test_table_only_writes_readme_and_note_from_results(tmp_path, monkeypatch):
    b = _bench()
    rows = [dict(step="s", encoder="e", size="demo", variant="v", seed=i, wf1=w, uar=1, war=2, mf1=3, seconds=10)
            for i, w in ((1, 58.0), (2, 60.0))]
    res = tmp_path / "r.csv"
    pd.DataFrame(rows, columns=b.COLUMNS).to_csv(res, index=False)
    docs = {}
    for name in ("README", "NOTE"):
        docs[name] = tmp_path / f"{name}.md"
        docs[name].write_text(f"head\n{b.MARK_START}\nold\n{b.MARK_END}\ntail\n")
        monkeypatch.setattr(b, name, docs[name])
    monkeypatch.setattr(b, "RESULTS", res)
    monkeypatch.setattr(b, "TABLE", tmp_path / "t.md")
    b.main(["--table-only"])
    for path in docs.values():
        text = path.read_text()
        assert "old" not in text and "| s | e | demo | v | 2 | 59.0 ± 1.4 |" in text and text.endswith("tail\n")
