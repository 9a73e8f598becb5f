"""TUG templates: the built-in files, the validator, the loader, the composer and its clean-up."""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bber_utils.synthesis.templates import (DIA_TAGS, LANGUAGES, SCHEMA_KEYS, TEMPLATE_NAMES, TemplateError,
                                            clean_utterance, compose_utterances, count_words, has_tag, load_templates,
                                            merge_templates, split_on_tags, strip_tags, validate_templates)

from tests.conftest import SHARED
REFERENCE_TEMPLATES = SHARED / "data" / "reference_tug_templates"

TINY = {"subjects": ["the cat", "the dog"], "verbs": ["sat down", "ran off"], "interjections": ["Oh!"],
        "contexts": ["in the rain", "at noon"], "templates": ["{i} {s} {v}, {c}.", "{s} {v} {c}."]}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_builtin_templates_are_valid_and_rich(language, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NBSP or other warnings in our own files
        t = load_templates(language, name)
    report = validate_templates(t)
    assert report.ok, str(report)
    assert not report.warnings, report.warnings
    for key in ("subjects", "verbs", "interjections", "contexts"):
        assert 20 <= len(t[key]) <= 45, (key, len(t[key]))
    assert 8 <= len(t["templates"]) <= 12
    for tpl in t["templates"]:  # after {i} the sentence goes on in lower case (the composer capitalises after . ! ?)
        assert not re.search(r"\{i\} (?!I\b|I')[A-ZА-ЯЁ]", tpl), tpl
    if name == "neutral_wording":  # must not carry emotion: no paralinguistic tags
        assert not any(has_tag(s) for k in SCHEMA_KEYS for s in t[k])
    # Enough for thousands of unique utterances.
    assert len(compose_utterances(t, 2000, seed=0)) == 2000


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_russian_templates_are_russian_with_present_tense_verbs(name):
    t = load_templates("ru", name)
    for key in SCHEMA_KEYS:
        for s in t[key]:
            words = strip_tags(re.sub(r"\{[svic]\}", " ", s))
            assert not re.search(r"[A-Za-z]", words), f"Latin letters outside tags in ru/{name} {key}: {s!r}"
    for s in t["subjects"] + t["verbs"] + t["contexts"]:
        assert re.search(r"[а-яё]", s, re.IGNORECASE), s
    # Any subject goes with any verb: every verb phrase holds a present-tense 3rd-person singular verb
    # (-ет/-ёт/-ит, optionally reflexive), which does not agree in gender.
    for v in t["verbs"]:
        assert any(re.fullmatch(r"\w+(ет|ёт|ит)(ся)?", w) for w in re.findall(r"\w+", v)), v


def test_compose_is_seeded_unique_and_within_word_limits():
    t = load_templates("en", "happy")
    a = compose_utterances(t, 300, seed=7)
    assert a == compose_utterances(t, 300, seed=7)
    assert a != compose_utterances(t, 300, seed=8)
    assert len(set(a)) == 300
    assert all(5 <= count_words(u) <= 20 for u in a)
    b = compose_utterances(t, 300, seed=7, min_words=10, max_words=12)
    assert all(10 <= count_words(u) <= 12 for u in b)


def test_compose_does_not_depend_on_pythonhashseed():
    code = ("from bber_utils.synthesis.templates import load_templates, compose_utterances;"
            "print('|'.join(compose_utterances(load_templates('ru','anger'), 50, seed=3)))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": h, "PATH": "/usr/bin:/bin"}).stdout for h in ("1", "12345")]
    assert outs[0] == outs[1] and outs[0].count("|") == 49


def test_tag_in_both_interjection_and_context_keeps_only_one():
    t = {"subjects": ["the cat"], "verbs": ["sat down", "ran off", "slept", "ate", "woke up"],
         "interjections": ["(laughs) Oh wow!"], "contexts": ["and then it rained (sighs)"],
         "templates": ["{i} {s} {v}, {c}."]}
    out = compose_utterances(t, 5, seed=0)
    assert len(out) == 5
    kept = {tag for u in out for tag in ("laughs", "sighs") if f"({tag})" in u}
    for u in out:
        assert sum(u.count(f"({tag})") for tag in DIA_TAGS) == 1, u
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        many = compose_utterances(t, 10, seed=1)  # only 5 distinct sentences x 2 tag choices exist
    kept |= {tag for u in many for tag in ("laughs", "sighs") if f"({tag})" in u}
    assert kept == {"laughs", "sighs"}  # either one may be stripped


def test_compose_returns_fewer_with_a_warning_instead_of_looping():
    with pytest.warns(UserWarning, match="found only"):
        out = compose_utterances(TINY, 100, seed=0)
    assert 0 < len(out) <= 2 * 2 * 2 * 2 * 2


def test_compose_rejects_invalid_templates():
    with pytest.raises(TemplateError, match="unknown placeholders"):
        compose_utterances({**TINY, "templates": ["{x} {s}"]}, 3, seed=0)


def test_clean_up_rules():
    assert clean_utterance("well , the cat sat .. and ran !") == "Well, the cat sat. And ran!"
    assert clean_utterance("Wait... what?") == "Wait... what?"
    assert clean_utterance("(sighs)Fine then(laughs) ok") == "(sighs) Fine then (laughs) ok"
    assert clean_utterance("Really?. no way!.") == "Really? No way!"
    assert clean_utterance("  too   many    spaces  ") == "Too many spaces"
    assert clean_utterance("Yes!, sure") == "Yes! Sure"
    assert clean_utterance("Oh! (sighs) fine") == "Oh! (sighs) Fine"


def test_strip_tags_and_word_count():
    assert strip_tags("(sighs) I don't know (clears throat)... fine.") == "I don't know... fine."
    assert strip_tags("Keep (this) text") == "Keep (this) text"  # only DIA tags are tags
    assert count_words("(laughs) Oh — this is great!") == 4
    assert split_on_tags("Oh (sighs) fine") == ["Oh", "fine"]


def test_validator_errors_and_warnings():
    bad = {"subjects": ["the cat", ""], "verbs": ["sat\u200b down"], "interjections": ["Oh (cries)!"],
           "contexts": ["at {c} noon"], "templates": ["{s} {v} {x}.", "no placeholder"]}
    rep = validate_templates(bad)
    text = "\n".join(rep.errors)
    assert not rep.ok
    assert "subjects[1]: empty string" in text
    assert "U+200B" in text
    assert "disallowed tag (cries)" in text
    assert "braces are only allowed in templates" in text
    assert "unknown placeholders ['{x}']" in text
    assert "no placeholder" in text
    assert not validate_templates({"subjects": []}).ok
    assert "missing key 'templates'" in "\n".join(validate_templates({k: ["a"] for k in SCHEMA_KEYS[:4]}).errors)
    assert not validate_templates(["not", "a", "dict"]).ok
    nbsp = {**TINY, "subjects": ["the\u00a0cat", "the\u202fdog"]}
    rep = validate_templates(nbsp)
    assert rep.ok and len(rep.warnings) == 2 and "NBSP" in rep.warnings[0]


def test_loader_normalises_nbsp_and_names_bad_files(tmp_path):
    f = tmp_path / "en" / "happy.json"
    f.parent.mkdir()
    f.write_text(json.dumps({**TINY, "subjects": ["the\u00a0cat", "the\u202fdog"]}), encoding="utf-8")
    with pytest.warns(UserWarning, match="NBSP"):
        t = load_templates("en", "happy", source=tmp_path)
    assert t["subjects"] == ["the cat", "the dog"]
    (tmp_path / "sad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TemplateError, match="sad.json"):
        load_templates("en", "sad", source=tmp_path)
    (tmp_path / "fear.json").write_text(json.dumps({**TINY, "interjections": ["(cries)"]}), encoding="utf-8")
    with pytest.raises(TemplateError, match=r"(?s)fear\.json.*disallowed tag \(cries\)"):
        load_templates("en", "fear", source=tmp_path)
    with pytest.raises(TemplateError, match="no template file"):
        load_templates("en", "anger", source=tmp_path)
    with pytest.raises(TemplateError, match="no built-in templates for language .de."):
        load_templates("de", "happy")


def test_merge_templates_keeps_order_and_drops_duplicates():
    m = merge_templates(TINY, {**TINY, "subjects": ["the dog", "a bird"]})
    assert m["subjects"] == ["the cat", "the dog", "a bird"]


def test_reference_published_templates_are_accepted():
    if not REFERENCE_TEMPLATES.is_dir():
        pytest.skip(f"reference templates not present at {REFERENCE_TEMPLATES}")
    for emotion in ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reference files contain NBSPs: warnings, not errors
            t = load_templates("en", emotion, source=REFERENCE_TEMPLATES)
        assert validate_templates(t).ok and not validate_templates(t).warnings
        assert not any("\u202f" in s or "\u00a0" in s for k in SCHEMA_KEYS for s in t[k])
        assert len(compose_utterances(t, 200, seed=42)) == 200
    raw = json.loads((REFERENCE_TEMPLATES / "surprise.json").read_text(encoding="utf-8"))
    rep = validate_templates(raw)
    assert rep.ok and any("narrow NBSP" in w for w in rep.warnings)


def test_tug_says_in_one_line_when_a_language_has_no_templates():
    from bber_utils.augment.tug_llm import build_template_prompt
    from bber_utils.synthesis.templates import load_templates

    with pytest.raises(TemplateError) as err:
        load_templates("pl", "anger")
    assert "\n" not in str(err.value) and "no built-in templates for language 'pl'" in str(err.value)
    assert "tug_ratio 0" in str(err.value)
    with pytest.raises(ValueError, match="TUG has no LLM template prompt for language 'pl'"):
        build_template_prompt("anger", "pl", [])
