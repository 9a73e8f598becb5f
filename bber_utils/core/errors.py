"""Errors a user can fix from the command line, and the one-line messages ``bber`` prints for them.

``ConfigError`` (a ``ValueError``) is a bad parameter, profile, option or key: ``bber`` prints its message on
one line, without a traceback, and exits with status 2 (``cli.main``). ``did_you_mean`` adds the nearest valid
choice (``difflib``).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Iterable


class ConfigError(ValueError):
    """A bad value of a parameter, option or key; the message names the value and the valid choices."""


class ReadOnlyError(ConfigError):
    """A folder a command must write into is read-only (``fileio.check_writable``); the message names it."""


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """``" (did you mean 'epochs'?)"`` for the closest choice, or ``""`` when none is close."""
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(what: str, value: object, choices: Iterable[object], more: str = "") -> ConfigError:
    """``ConfigError("unknown model 'biformerr' (did you mean 'biformer'?); choose one of […]")``; with more
    than 20 choices, ``more`` (e.g. "see bber train --help") replaces the list."""
    choices = sorted({str(c) for c in choices})
    listed = f"choose one of {choices}" if len(choices) <= 20 or not more else f"{len(choices)} keys: {more}"
    return ConfigError(f"unknown {what} {value!r}{did_you_mean(value, choices)}; {listed}")


# A hub id: "name" or "owner/name", letters, digits, - _ . (no spaces, no leading/trailing punctuation).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")


def looks_like_hub_id(spec: str) -> bool:
    """True for ``owner/name`` (every hub model the package uses has an owner)."""
    return bool(_HUB_ID.match(str(spec)))


def check_model_spec(spec: object, known: Iterable[str], what: str) -> None:
    """Raise ``ConfigError`` before any download when ``spec`` is neither a built-in encoder name, an existing
    folder nor an ``owner/name`` hub id (``wav2vecc`` is a typo, not a model to fetch)."""
    if spec is None or spec == "":
        return
    s = str(spec)
    known = list(known)
    if s in known or Path(os.path.expanduser(s)).is_dir() or looks_like_hub_id(s):
        return
    looks_like_path = os.sep in s or s.startswith((".", "~"))
    hint = f"no folder {Path(s).expanduser().resolve()}" if looks_like_path else "not an owner/name hub id"
    raise ConfigError(f"{what} {s!r} is not a built-in encoder ({', '.join(known)}), an existing folder nor a "
                      f"hub id ({hint}){did_you_mean(s, known)}")
