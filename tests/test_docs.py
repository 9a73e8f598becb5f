"""The README and docs/ keep their promises: a newcomer's README (at most 150 lines), every relative link and
anchor resolves, every file, test or mutant a page cites exists, and the generated blocks are in place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a repository path cited in backticks: a folder we own, then a file with an extension (optionally ::test)
CITED = re.compile(r"`((?:bber_utils|tests|tools|benchmarks|configs|docs|notebooks|figures|requirements|binder)"
                   r"/[\w./-]*\.(?:py|md|yaml|ipynb|png|csv|lock|txt))(?:::(\w+))?")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"(?m)^#+ (.+)$", page.read_text(encoding="utf-8"))}


def test_the_readme_reads_in_three_minutes():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= 150, f"README.md has {n} lines; details belong in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_file_and_test_exists(page):
    missing = []
    for path, test in CITED.findall(page.read_text(encoding="utf-8")):
        if "*" in path or "<" in path:
            continue
        file = ROOT / path
        if not file.exists():
            missing.append(path)
        elif test and not re.search(rf"(?m)^(async )?def {re.escape(test)}\(|^class {re.escape(test)}\b",
                                    file.read_text(encoding="utf-8")):
            missing.append(f"{path}::{test}")
    assert not missing, f"{page.name}: cites what does not exist: {missing}"


def test_every_cited_mutant_exists():
    from tools.mutants import all_mutants

    names = {m.name for m in all_mutants()}
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    cited = set(re.findall(r"`((?:ref|fix\d+|ls-llm)-[\w-]+)`", text))
    assert cited <= names, f"pages cite mutants that do not exist: {sorted(cited - names)}"


def test_the_generated_blocks_are_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for begin, end in (("<!-- study-table:begin", "<!-- study-table:end -->"),
                       ("<!-- real-text-table:start -->", "<!-- real-text-table:end -->")):
        assert readme.count(begin) == 1 and readme.count(end) == 1 and readme.index(begin) < readme.index(end)
