"""Study: many runs — the paper's study and sweeps, their registry, summaries over seeds, findings and tables.

The files, bottom-up:

    registry.py   load_registry: every train/<run>/metrics.json as one table; best_run (by dev); run_name_for
    stats.py      summarize (mean, std, 95 % CI over seeds), study_table, paired_difference, compare_rows, compare_to
    cluster.py    the slurm block's checks, run_groups: runs as submitit jobs (SLURM or local), RunsFailed
    runner.py     run_one (bber train in a child process, or notebook 06 by papermill), run_sweep, expand_grid,
                  run_on_cluster (study_runner submitit: cluster.run_groups)
    schedule.py   run_study: a study's runs on N workers, each seed's shared stage 1 trained once
    search.py     grid_search, greedy_search: augmentation ratios chosen on dev only
    design.py     paper_study (the settings of the paper's study), PAPER_REPORTED, paper_table
    findings.py   study_findings: the study's questions answered seed by seed; conclusions
    report.py     study_markdown: the study table as Markdown
    readme.py     publish, update_readme: figures/ and the README block
    cli.py        bber sweep, bber results, bber readme

This ``__init__`` only re-exports. To replace a function in a test, patch it in the module that defines it
(``bber_utils.study.runner.run_one``): the others call it through that module.
"""

from bber_utils.study.cluster import SLURM_DEFAULTS, RunsFailed
from bber_utils.study.design import AUGMENT_NAMES, FUSION_MODELS, PAPER_REPORTED, paper_study, paper_table
from bber_utils.study.findings import (conclusions_markdown, findings_markdown, study_comparisons, study_findings,
                                       study_report)
from bber_utils.study.readme import is_default_workdir, publish, readme_block, update_readme
from bber_utils.study.registry import (METRICS, SETTING_KEYS, best_run, load_registry, read_metrics, run_name_for,
                                      run_settings)
from bber_utils.study.report import SETTING_NAMES, paper_table_view, study_markdown
from bber_utils.study.runner import STUDY_RUNNERS, expand_grid, run_one, run_sweep
from bber_utils.study.schedule import run_study
from bber_utils.study.search import greedy_search, grid_search
from bber_utils.study.stats import (compare_rows, compare_to, confidence_interval, paired_difference, study_table,
                                    summarize)

__all__ = ["AUGMENT_NAMES", "FUSION_MODELS", "METRICS", "PAPER_REPORTED", "RunsFailed", "SETTING_KEYS",
           "SETTING_NAMES", "SLURM_DEFAULTS", "STUDY_RUNNERS", "best_run", "compare_rows", "compare_to",
           "conclusions_markdown", "confidence_interval",
           "expand_grid", "findings_markdown", "is_default_workdir", "greedy_search", "grid_search", "load_registry", "paired_difference",
           "paper_study", "paper_table", "paper_table_view", "publish", "read_metrics", "readme_block",
           "run_name_for", "run_one", "run_settings", "run_study", "run_sweep", "study_comparisons",
           "study_findings", "study_markdown", "study_report", "study_table", "summarize", "update_readme"]
