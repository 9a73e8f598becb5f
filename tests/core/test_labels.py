"""A corpus's label set (``core.labels.parse_label_set``) and the ISO 639-1 languages (``core.languages``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bber_utils.core.errors import ConfigError
from bber_utils.core.labels import CLASSES, UnknownLabelError, class_indices, parse_label_set
from bber_utils.core.languages import ISO_639_1, check_language


@given(st.lists(st.sampled_from(CLASSES), min_size=1), st.sampled_from([str.lower, str.upper, str.title]),
       st.sampled_from([",", ", ", " ,"]))
def test_a_label_set_is_its_classes_in_class_order(names, case, sep):
    got = parse_label_set(sep.join(case(n) for n in names))
    assert got == tuple(c for c in CLASSES if c in names)
    assert parse_label_set(names) == got and class_indices(names) == tuple(CLASSES.index(c) for c in got)


@pytest.mark.parametrize("spec", [None, "", "all", "ALL"])
def test_no_label_set_is_all_seven_classes(spec):
    assert parse_label_set(spec) == CLASSES


def test_a_label_set_naming_an_unknown_class_is_one_line_with_the_closest_class():
    with pytest.raises(UnknownLabelError) as err:
        parse_label_set("anger,feer,neutral")
    msg = str(err.value)
    assert "\n" not in msg and "'feer'" in msg and "did you mean 'fear'?" in msg and "neutral" in msg
    with pytest.raises(UnknownLabelError, match="no class named"):
        parse_label_set(" , ")


@given(st.sampled_from(sorted(ISO_639_1)))
def test_every_iso_639_1_code_is_a_language(code):
    assert check_language(code.upper()) == code


def test_iso_639_1_has_every_code_and_only_two_letter_ones():
    assert len(ISO_639_1) == 184 and {"en", "ru", "pl", "de", "zh"} <= ISO_639_1
    assert all(len(c) == 2 and c.isalpha() and c.islower() for c in ISO_639_1)


@pytest.mark.parametrize("bad", ["pol", "english", "p", "", "xx"])
def test_a_language_that_is_not_a_code_is_one_line(bad):
    with pytest.raises(ConfigError) as err:
        check_language(bad)
    assert "\n" not in str(err.value) and "ISO 639-1" in str(err.value) and repr(bad) in str(err.value)
