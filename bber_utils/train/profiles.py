"""A profile's parameters: every parameter's default, the profile file's values over them, then the overrides.

The defaults are the paper's: ``TrainConfig`` (the training keys, notebook 06's; its model sizes are
``ModelConfig``'s) and ``core.parameters`` (the keys of the other notebooks). A profile file holds only what it
changes (``configs/paper.yaml``: the models that need a download or trust; ``demo.yaml``, ``smoke.yaml``: the
small CPU settings); its name is its file's stem and its work folder ``runs/<name>`` unless it sets ``profile`` or
``workdir``. A key that is no parameter is a one-line ``ConfigError`` (a misspelt key would silently take the
default). Every consumer reads profiles here: ``bber train``, ``sweep`` and ``reproduce`` (which passes the result
to every notebook), notebooks 06 and 07 when run in JupyterLab, tools/.

Owns: ``PARAMETER_CLASSES``, ``defaults``, ``known_keys``, ``key_descriptions``, ``load_profile``.
Imports from this package: ``config``. Must not be imported by the modules below ``cli``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from bber_utils.core.errors import unknown
from bber_utils.core.parameters import (ExtractParams, InferenceParams, LsLlmParams, PrepareParams, ResultsParams,
                                        SdsParams, StudyParams, TugParams, YourCorpusParams, field_comments)
from bber_utils.core.parameters import defaults as class_defaults
from bber_utils.core.profiles import profile_path, read_profile
from bber_utils.train.config import TrainConfig, config_key_descriptions

# Every parameter's dataclass, in the order of the notebooks (01 ... 10; 06's keys are TrainConfig's).
PARAMETER_CLASSES = (PrepareParams, ExtractParams, SdsParams, TugParams, LsLlmParams, TrainConfig, StudyParams,
                     ResultsParams, InferenceParams, YourCorpusParams)
_PROFILE_HELP = "the profile's name (default: its file's stem; its work folder is runs/<name>)"


def defaults() -> dict[str, Any]:
    """``{key: default}`` of every parameter (fresh copies of list and dict values)."""
    out: dict[str, Any] = {}
    for cls in PARAMETER_CLASSES:
        out.update(class_defaults(cls))
    return out


def known_keys() -> set[str]:
    """Every key a profile may hold."""
    return {"profile", *defaults()}


def key_descriptions() -> dict[str, str]:
    """``{key: one-line description}`` of every parameter (the comment beside its field)."""
    out = {"profile": _PROFILE_HELP}
    for cls in PARAMETER_CLASSES:
        out.update(config_key_descriptions() if cls is TrainConfig else field_comments(cls))
    return out


def load_profile(profile: str | os.PathLike | Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """Every parameter: its default, the profile's value over it, then ``overrides``. ``profile`` is a profile
    name (``"demo"``), a YAML file, or a mapping of values (the whole profile papermill passes a notebook)."""
    if isinstance(profile, Mapping):
        values, where, named = dict(profile), "the parameters", {}
    else:
        path = profile_path(profile)
        values, where = read_profile(path), str(path)
        named = {"profile": path.stem, "workdir": f"runs/{path.stem}"}
    bad = sorted(map(str, set(values) - known_keys()))
    if bad:
        raise unknown(f"key in {where}:", bad[0], known_keys(), "see bber reproduce --help")
    out = {"profile": named.get("profile"), **defaults(), **named}
    out.update(values)
    out.update(overrides)
    if out["profile"] is None:
        del out["profile"]
    return out
