"""Mutants of LS-LLM (bber_utils.augment.ls_llm): each puts back one defect of the reference or of our old
reply reader at run time (monkeypatch, no file edited); the cited tests must fail under it.

Every mutant patches a module-level helper of ``bber_utils.augment.ls_llm.replies`` that the public functions
look up at call time, so one patch reaches every caller (``validate_distribution``, ``read_reply``, the
workdir and the reference-file loader).
"""

from __future__ import annotations

import re

from .base import Mutant

REPLIES = "bber_utils.augment.ls_llm.replies"
T = "tests/augment/test_ls_llm.py"
TR = "tests/augment/test_ls_llm_replies.py"


def _replies():
    import importlib

    return importlib.import_module(REPLIES)


def _no_true_label_check(mp) -> None:
    """The reference: a reply whose top class is not the true label is used as it is."""
    mp.setattr(_replies(), "_true_label_highest", lambda v, t, policy, reasons: (v, None))


def _swap_leaves_ties(mp) -> None:
    """Our old validator: swap with the first maximum *or* break a tie, never both (a second class sharing the
    maximum stays tied with the true label after the swap)."""
    import numpy as np

    from bber_utils.core.labels import CLASSES

    def old(v, t, policy, reasons):
        label, others = CLASSES[t], np.delete(v, t)
        if v[t] < others.max():
            k = int(np.flatnonzero(v == v.max())[0])
            if policy == "reject":
                return v, "not highest"
            v[t], v[k] = v[k], v[t]
            reasons.append(f"true label not highest: swapped {label} with {CLASSES[k]}")
        elif v[t] == others.max():
            if policy == "reject":
                return v, "tie"
            tied = np.flatnonzero(v == others.max())
            tied = tied[tied != t]
            moved = 0.01 * v[tied]
            v[tied] -= moved
            v[t] += moved.sum()
            reasons.append(f"tie at the top broken in favour of {label}")
        return v, None

    mp.setattr(_replies(), "_true_label_highest", old)


def _names_ignored(mp) -> None:
    """Our old reader of ``neutral 0.60, fear 0.20, ...``: the values in the order written, names ignored."""
    mp.setattr(_replies(), "_by_name", lambda block: [p.value for p in block])


def _prose_accepted(mp) -> None:
    """Our old list reader: any line with 7 numbers, else any 7 numbers in the answer, no distribution check
    (prose, ranks and a NaN-shortened list become soft labels after renormalising)."""
    R = _replies()
    num = re.compile(r"(?<![\w.])(?P<num>[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?)(?P<pct>[ \t]*%)?(?!\w)")

    def old(answer):
        found = [list(num.finditer(ln)) for ln in reversed(answer.splitlines())]
        found = [f for f in found if len(f) == 7] or [list(num.finditer(answer))]
        if len(found[0]) != 7:
            return R.Reply(None, R.NO_NUMBERS)
        values = [float(m["num"]) for m in found[0]]
        if any(m["pct"] for m in found[0]) or (max(values) > 1 and 90 <= sum(values) <= 110):
            values = [v / 100 for v in values]
        return R.Reply(values, "", "list")

    mp.setattr(R, "_read_list", old)
    mp.setattr(R, "_NONFINITE", re.compile(r"(?!x)x"))  # and a NaN is simply skipped


def _nan_not_checked(mp) -> None:
    """No scan for nan / inf in the reply."""
    mp.setattr(_replies(), "_NONFINITE", re.compile(r"(?!x)x"))


MUTANTS: list[Mutant] = [
    Mutant("ls-llm-no-true-label-check", "LLM replies never checked for 'true label highest' (README row)",
           (f"{T}::test_validate_true_label_not_highest_swap_or_reject",
            f"{T}::test_openai_backend_parses_validates_and_surfaces_refusals",
            f"{TR}::test_property_validation_leaves_the_true_label_strictly_highest"),
           _no_true_label_check),
    Mutant("ls-llm-tie-after-swap", "a repaired distribution can still tie at the top (issue 20 item 3)",
           (f"{TR}::test_after_a_swap_the_true_label_is_strictly_highest",
            f"{TR}::test_property_validation_leaves_the_true_label_strictly_highest"),
           _swap_leaves_ties),
    Mutant("ls-llm-names-ignored", "class names ignored, values read in the order written (issue 20 item 4)",
           (f"{TR}::test_names_decide_the_mapping_in_any_form_and_order",
            f"{T}::test_named_replies_land_on_their_classes_in_the_table"),
           _names_ignored),
    Mutant("ls-llm-prose-accepted", "prose, ranks and NaN-shortened lists turned into soft labels (issue 18)",
           (f"{TR}::test_prose_ranks_and_nan_are_rejected_with_a_reason",
            f"{T}::test_a_prose_reply_is_rejected_in_the_table_with_the_parsers_reason"),
           _prose_accepted),
    Mutant("ls-llm-nan-not-checked", "a NaN or inf in a reply does not reject it (issue 18)",
           (f"{TR}::test_property_a_nan_anywhere_rejects",),
           _nan_not_checked),
]
