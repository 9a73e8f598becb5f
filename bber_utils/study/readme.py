"""Publishing the demo's results: notebook 08 writes the study table as Markdown,
``publish(files, repo)`` copies its files to ``figures/`` and ``update_readme`` puts the table into the README
between two markers, so the README's table and the committed figures always come from the same run
(``bber readme [--check]``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from bber_utils.core.paths import REPO_ROOT


BEGIN = "<!-- study-table:begin (written by notebook 08 / `bber readme`; do not edit) -->"

END = "<!-- study-table:end -->"

TABLE_FILE = "study_table.md"


def is_default_workdir(root: str | os.PathLike, profile: str) -> bool:
    """True when ``root`` is the repository's ``runs/<profile>`` (only that run may write the published files)."""
    return Path(root).resolve() == (REPO_ROOT / "runs" / str(profile)).resolve()


def update_readme(readme: str | os.PathLike, table: str, begin: str = BEGIN, end: str = END) -> bool:
    """Replace the text between the markers ``begin`` and ``end`` (default: the study table's) in ``readme``
    with ``table``; True when it changed. Unchanged text is not rewritten (``git status`` stays clean)."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: no table markers ({begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    new = head + begin + "\n" + table.strip("\n") + "\n" + end + tail
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def readme_block(readme: str | os.PathLike) -> str:
    """The text between the markers (stripped)."""
    text = Path(readme).read_text(encoding="utf-8")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def publish(files: Iterable[str | os.PathLike], repo: str | os.PathLike = REPO_ROOT) -> Path:
    """Copy notebook 08's files to ``<repo>/figures/`` (``08_`` prefix dropped) and refresh the README block from
    the study table. Unchanged files are left untouched (same bytes: ``git status`` stays clean)."""
    out = Path(repo) / "figures"
    out.mkdir(exist_ok=True)
    for path in map(Path, files):
        dst = out / path.name.replace("08_", "", 1)
        if not dst.exists() or dst.read_bytes() != path.read_bytes():
            shutil.copyfile(path, dst)
    if (out / TABLE_FILE).exists():
        update_readme(Path(repo) / "README.md", (out / TABLE_FILE).read_text(encoding="utf-8"))
    return out
