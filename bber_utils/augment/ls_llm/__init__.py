"""LS-LLM: soft labels from an LLM (label smoothing with LLM knowledge), notebook 05 and ``bber label``.

The paper asks an LLM (Qwen3-4B with thinking disabled; Phi-4-mini-instruct) for a probability distribution
over the seven classes of a train utterance, telling it the true label, and trains on that distribution as a
soft target for a fraction p of the samples. The package, in the order a reply travels:

========================  ==============================================================================
``prompts.py``            the prompts (:data:`PROMPT_VERSION`) and :func:`build_messages`
``labellers.py``          the backends: lexicon (offline, not an LLM), generate (chat LLM + reply reading),
                          logits (class-word next-token probabilities), reference (published files)
``replies.py``            reading a reply (:func:`read_reply`, :func:`parse_reply`) and validating it
                          (:func:`validate_distribution`): pure functions, no torch, no I/O
``cache.py``              the resumable per-(backend, model, prompt, mode, settings) JSON-lines cache, shards
``tables.py``             the soft-label table (:data:`SOFT_LABEL_COLUMNS`), writing and reading it, the
                          reference's ``*_emotions_*.csv`` files
``workdir.py``            orchestration (:func:`label_utterances`, :func:`label_workdir`) and summaries
``cli.py``                ``bber label``
========================  ==============================================================================

Imports point down this list's dependency order: ``replies`` and ``prompts`` import nothing of the package;
``tables`` imports ``replies``; ``labellers`` imports ``prompts``, ``replies``, ``tables``; ``cache`` imports
``labellers``; ``workdir`` imports all of them; ``cli`` imports ``workdir``. This file only re-exports the public
names, so ``from bber_utils.augment.ls_llm import ...`` keeps working.

Validation (:func:`validate_distribution`): 7 finite values, non-negative (tiny negatives clipped), sum 1
(renormalised), not all equal, the true label strictly highest (policy ``"swap"``: swapped with the maximum,
then any remaining tie broken; the reference never checked this: 1.2-11.6 % of its rows). Output
``<workdir>/ls_llm/soft_labels.parquet``, read back by :func:`load_soft_labels`, which also accepts the
reference CSV format.
"""

from bber_utils.augment.ls_llm.cache import LabelCache, request_key
from bber_utils.augment.ls_llm.cli import register_cli
from bber_utils.augment.ls_llm.labellers import (LABEL_BACKENDS, LEXICON_BACKEND, MODES, GenerateLabeller, Labeller,
                                                 LabelOutcome, LabelRequest, LexiconLabeller, LogitLabeller,
                                                 ReferenceLabeller, build_labeller)
from bber_utils.augment.ls_llm.prompts import GENERATE_PROMPT, LOGITS_PROMPT, PROMPT_VERSION, build_messages
from bber_utils.augment.ls_llm.replies import (CLASS_ALIASES, PARSER_VERSION, POLICIES, SUM_OK, SUM_RANGE,
                                               TINY_NEGATIVE, USABLE_STATUSES, Reply, class_of, parse_reply, read_reply,
                                               validate_distribution)
from bber_utils.augment.ls_llm.tables import (EXTRA_COLUMNS, REFERENCE_COLUMNS, SOFT_LABEL_COLUMNS, SOFT_LABELS_FILE,
                                              load_reference_labels, load_soft_labels, reference_model_name,
                                              reference_to_soft_labels, save_soft_labels)
from bber_utils.augment.ls_llm.workdir import (argmax_agreement, entropy, label_utterances, label_workdir,
                                               mean_by_true_class, status_summary, train_manifests)
from bber_utils.core.labels import CLASSES, NUM_CLASSES

__all__ = [
    "CLASSES", "NUM_CLASSES", "LabelCache", "request_key", "register_cli", "LABEL_BACKENDS", "LEXICON_BACKEND",
    "MODES", "GenerateLabeller", "LabelOutcome", "Labeller", "LabelRequest", "LexiconLabeller", "LogitLabeller",
    "ReferenceLabeller", "build_labeller", "GENERATE_PROMPT", "LOGITS_PROMPT", "PROMPT_VERSION", "build_messages",
    "CLASS_ALIASES", "PARSER_VERSION", "POLICIES", "SUM_RANGE", "SUM_OK", "TINY_NEGATIVE", "USABLE_STATUSES",
    "Reply", "class_of", "parse_reply", "read_reply", "validate_distribution", "EXTRA_COLUMNS",
    "REFERENCE_COLUMNS", "SOFT_LABEL_COLUMNS", "SOFT_LABELS_FILE", "load_reference_labels", "load_soft_labels",
    "reference_model_name", "reference_to_soft_labels", "save_soft_labels", "argmax_agreement", "entropy",
    "label_utterances", "label_workdir", "mean_by_true_class", "status_summary", "train_manifests",
]
