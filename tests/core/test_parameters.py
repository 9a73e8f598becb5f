"""``core.parameters``: the notebook parameters' defaults (one dataclass per notebook) and their descriptions."""

from __future__ import annotations

from bber_utils.core import parameters as P


def test_list_and_dict_defaults_are_fresh_copies():
    """A notebook that appends to ``ablation_seeds`` must not change the next profile's default."""
    first = P.defaults(P.StudyParams)
    first["ablation_seeds"].append(99)
    first["ablation_augment"]["sds_ratio"] = 9.0
    again = P.defaults(P.StudyParams)
    assert again["ablation_seeds"] == [1, 2, 3] and again["ablation_augment"]["sds_ratio"] == 0.5


def test_every_notebook_parameter_is_described_by_its_comment():
    for cls in P.NOTEBOOK_PARAMETERS:
        comments = P.field_comments(cls)
        assert comments.keys() == P.defaults(cls).keys() and all(comments.values()), cls.__name__
    assert P.field_comments(P.StudyParams)["ablation_augment"] == "each alone on the fusion model, then all together"
