"""``train.profiles.load_profile``: one source for each default. The dataclasses hold every key's default (the
paper's), a profile file holds only what it changes, and every consumer gets the merged map."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest
import yaml

from bber_utils.core.errors import ConfigError
from bber_utils.core.papermill import declared_parameters
from bber_utils.core.paths import REPO_ROOT
from bber_utils.train import TrainConfig
from bber_utils.train.profiles import PARAMETER_CLASSES, defaults, key_descriptions, known_keys, load_profile

PROFILES = ("smoke", "demo", "paper")
# The commit before the profiles held only their differences: its configs/*.yaml listed every key.
FULL_PROFILES_COMMIT = "d19295c"


def _file(profile: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "configs" / f"{profile}.yaml").read_text(encoding="utf-8")) or {}


def test_every_key_has_one_dataclass():
    names = [f.name for cls in PARAMETER_CLASSES for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_every_key_has_a_description():
    desc = key_descriptions()
    assert set(desc) == known_keys()
    assert all(desc.values()), [k for k, v in desc.items() if not v]


def test_every_notebook_parameter_has_a_default():
    for nb in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        missing = declared_parameters(nb) - known_keys() - {"profile_params"}
        assert not missing, f"{nb.name} declares {sorted(missing)}: give them a default in a parameter dataclass"


@pytest.mark.parametrize("profile", PROFILES)
def test_a_profile_holds_only_what_differs_from_the_defaults(profile):
    base = {**defaults(), "profile": profile, "workdir": f"runs/{profile}"}
    same = sorted(k for k, v in _file(profile).items() if base[k] == v)
    assert not same, f"configs/{profile}.yaml repeats the defaults of {same}"


@pytest.mark.parametrize("profile", PROFILES)
def test_the_merged_profiles_equal_the_full_profiles_they_replaced(profile):
    """Today's values of every key the full files listed (commit ``FULL_PROFILES_COMMIT``), key by key. One
    exception: the paper's ``demo_per_class`` (0 there, the default 40 now), which ``corpora.prepare`` ignores for
    its dataset (``union``)."""
    try:
        text = subprocess.run(["git", "show", f"{FULL_PROFILES_COMMIT}:configs/{profile}.yaml"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the history holds no commit {FULL_PROFILES_COMMIT} (a shallow clone?)")
    full, merged = yaml.safe_load(text), load_profile(profile)
    if profile == "paper":
        assert full.pop("demo_per_class") == 0 and merged["dataset"] == "union"
    assert {k: merged[k] for k in full} == full
    assert TrainConfig.from_dict(merged).to_dict() == TrainConfig.from_dict(full).to_dict()


def test_no_default_downloads_a_model_or_trusts_its_code():
    """The paper's hub models, servers and remote code are the paper profile's choice, never a default."""
    d = defaults()
    offline = {"audio_encoder": "logmel", "text_encoder": "e5-words", "text_trust_remote_code": False,
               "text_code_revision": None, "asr_model": None, "tug_template_source": "builtin", "tug_llm_model": None,
               "tug_tts": "espeak", "tug_tts_model": None, "ls_llm_backend": "lexicon", "ls_llm_model": None}
    assert {k: d[k] for k in offline} == offline
    paper = _file("paper")
    assert paper["text_trust_remote_code"] is True and set(paper) == set(offline) - {"tug_tts_model"}


def test_a_profile_is_named_after_its_file(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("epochs: 2\n")
    params = load_profile(mine, lr=0.5)
    assert (params["profile"], params["workdir"], params["epochs"], params["lr"]) == ("mine", "runs/mine", 2, 0.5)
    assert params["batch_size"] == TrainConfig.batch_size  # the default
    mine.write_text("profile: other\nworkdir: elsewhere\n")
    assert (load_profile(mine)["profile"], load_profile(mine)["workdir"]) == ("other", "elsewhere")
    assert "profile" not in load_profile({"epochs": 3})  # a mapping is taken as it is, over the defaults


@pytest.mark.parametrize("text, needle", [
    ("lrr: 0.1\n", "unknown key in {path}: 'lrr' (did you mean 'lr'?)"),
    ("epochs: 2\nablation_seed: [1]\n", "'ablation_seed' (did you mean 'ablation_seeds'?)"),
])
def test_a_misspelt_key_is_one_line_not_a_silent_default(tmp_path, text, needle):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_profile(path)
    assert needle.format(path=path) in str(exc.value) and "\n" not in str(exc.value), exc.value


def test_bber_train_names_a_misspelt_profile_key(tmp_path, capsys):
    from bber_utils import cli

    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 2\nbatchsize: 4\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'batchsize' (did you mean 'batch_size'?)" in err, err
