"""Mutants for the README's "Where we differ from the reference code" table: each puts the reference's
behaviour back at run time; the tests the README cites must fail. (The LS-LLM validator row, "LLM replies never
checked", lives in ``m_ls_llm.py``.)"""

from __future__ import annotations

import types

from .base import Mutant


def _numpy_proxy(**overrides):
    """A stand-in for a module's ``np`` with some attributes replaced (the rest is numpy's)."""
    import numpy

    class Proxy(types.ModuleType):
        def __getattr__(self, name):
            return getattr(numpy, name)

    proxy = Proxy("numpy_mutant")
    for k, v in overrides.items():
        setattr(proxy, k, v)
    return proxy


# 1. LS-LLM soft labels collapsed to their argmax between the batch and the loss -------------------------------
def _argmax_soft_labels(mp):
    import torch

    from bber_utils.train import dataset, fusion, loop

    real = dataset.collate

    def collate(items):
        batch = real(items)
        t = batch["target"]
        hard = torch.nn.functional.one_hot(t.argmax(-1), t.shape[-1]).to(t.dtype)
        batch["target"] = hard * (t.sum(-1, keepdim=True) > 0)  # padding rows stay empty
        return batch

    for module in (dataset, loop, fusion):  # loop and fusion import collate by name
        mp.setattr(module, "collate", collate)


# 2. graph edges only between nodes 0 and 1 of the batch --------------------------------------------------------
def _graph_first_sample_only(mp):
    import torch

    import bber_utils.models.graph as graph

    def batch_edge_index(edge_index, batch_size, num_nodes):
        return torch.tensor([[0, 1], [1, 0]], device=edge_index.device)

    mp.setattr(graph, "batch_edge_index", batch_edge_index)


# 3. no key-padding masks in attention ----------------------------------------------------------------------------
def _no_padding_masks(mp):
    from bber_utils.models.blocks import CrossAttentionBlock

    def _attend(self, query, context, context_mask):
        out, _ = self.attn(query, context, context, need_weights=False)
        return self.drop(out)

    mp.setattr(CrossAttentionBlock, "_attend", _attend)


# 4. cross-attention values taken from the query's own modality --------------------------------------------------
def _values_from_query(mp):
    from bber_utils.models.blocks import CrossAttentionBlock

    def _attend(self, query, context, context_mask):
        values = query.mean(dim=1, keepdim=True).expand(-1, context.shape[1], -1)  # the query's own content
        out, _ = self.attn(query, context, values, key_padding_mask=~context_mask, need_weights=False)
        return self.drop(out)

    mp.setattr(CrossAttentionBlock, "_attend", _attend)


# 5. gate: softmax over the features ---------------------------------------------------------------------------------
def _softmax_gate(mp):
    import torch

    from bber_utils.models.blocks import GatedFusion

    def forward(self, audio, text):
        h_audio = self.drop(torch.tanh(self.audio_proj(audio)))
        h_text = self.drop(torch.tanh(self.text_proj(text)))
        z = torch.softmax(self.gate_proj(torch.cat([audio, text], dim=-1)), dim=-1)
        return z * h_audio + (1 - z) * h_text, z

    mp.setattr(GatedFusion, "forward", forward)


# 6. fixed width: batches shorter than 95 frames crash ----------------------------------------------------------
def _fixed_width_95(mp):
    import bber_utils.models.fusion as fusion

    real = fusion.check_mask

    def check_mask(mask, name):
        real(mask, name)
        if name == "audio_mask" and mask.shape[1] < 95:
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied (batch of {mask.shape[1]} frames, "
                               f"the classifier was sized for 95)")

    mp.setattr(fusion, "check_mask", check_mask)


# 7. unseeded SDS; feature cache keyed without the encoder; pickled tensors -------------------------------------
def _unseeded_sds(mp):
    import numpy

    import bber_utils.augment.sds as sds

    rnd = types.SimpleNamespace(**{k: getattr(numpy.random, k) for k in dir(numpy.random) if not k.startswith("_")})
    rnd.default_rng = lambda *a, **k: numpy.random.default_rng()  # the seed is ignored
    mp.setattr(sds, "np", _numpy_proxy(random=rnd))


def _cache_key_without_encoder(mp):
    import bber_utils.features.store as store

    mp.setattr(store, "store_dir_name", lambda modality, key: f"{modality}-features")


def _pickled_shards(mp):
    import numpy

    import bber_utils.features.store as store

    def save(file, arr, allow_pickle=False):
        obj = numpy.empty(1, dtype=object)
        obj[0] = numpy.asarray(arr)
        numpy.save(file, obj, allow_pickle=True)  # a pickled Python object, as the reference's torch pickles

    mp.setattr(store, "np", _numpy_proxy(save=save))


# 8. failed TTS saved as silence (the LLM-reply half of this row: m_ls_llm.py) -------------------------------------
def _tts_silence_kept(mp):
    from bber_utils.synthesis.tts import TTSBackend

    mp.setattr(TTSBackend, "check", lambda self, wav, sr=16000: "")


# 9. the reference's Mamba maths: exp(A)·Δ with a raw A ---------------------------------------------------------------
def _reference_mamba(mp):
    import torch
    import torch.nn.functional as F

    import bber_utils.models.mamba as mamba

    def selective_scan(u, delta, A, B, C, D=None, z=None, impl="auto"):
        # the reference's raw A is our −A = exp(A_log) > 0, and its Ā = exp(−A_raw)·Δ = exp(A)·Δ (not exp(Δ·A))
        dA = torch.exp(A)[None, None] * delta.unsqueeze(-1)                           # (B, L, ED, N)
        bx = delta.unsqueeze(-1) * B.unsqueeze(2) * u.unsqueeze(-1)
        h = torch.zeros_like(bx[:, 0])
        ys = []
        for t in range(u.shape[1]):
            h = dA[:, t] * h + bx[:, t]
            ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
        y = torch.stack(ys, dim=1)
        if D is not None:
            y = y + u * D
        return y * F.silu(z) if z is not None else y

    mp.setattr(mamba, "selective_scan", selective_scan)


# 10. macro metrics over the classes present only -----------------------------------------------------------------
def _metrics_present_classes(mp):
    """The macro averages over the classes present in ``y_true`` or ``y_pred`` only (the reference's scikit-learn
    calls without ``labels``), put back into ``train.metrics.score``."""
    import numpy

    from bber_utils.train import metrics

    real = metrics.score

    def present_only(y_true, y_pred, classes=None):
        present = sorted(set(numpy.r_[numpy.ravel(y_true), numpy.ravel(y_pred)].astype(int).tolist()))
        return {k: v for k, v in real(y_true, y_pred, classes=present or None).items() if k != "classes"}

    mp.setattr(metrics, "score", present_only)


# 11. WithProb fusion mixes the full unimodal models' in-sample logits ---------------------------------------------
def _withprob_in_sample_logits(mp):
    from bber_utils.train import loop, unimodal as T

    real = T._out_of_fold_logits

    def in_sample(tc, modality, run, stores, splits, soft_table, weights, device, meta, lr, epochs):
        """The fold models are still trained and their files written; their logits are then not used."""
        from bber_utils.train.dataset import EmotionDataset

        real(tc, modality, run, stores, splits, soft_table, weights, device, meta, lr, epochs)
        model = T.unimodal_model(tc, modality, (stores[0] or stores[1]).dim).to(device)
        model.load_state_dict(run.state_dict)
        ds = EmotionDataset(splits["train"].reset_index(drop=True), *stores, audio_pool=tc.audio_pool)
        return dict(zip(ds.utt_ids, loop.predict(model, ds, loop.forward_batch, device, tc.eval_batch_size)))

    mp.setattr(T, "_out_of_fold_logits", in_sample)


MUTANTS = [
    Mutant("ref-argmax-soft-labels", "LS-LLM soft labels collapsed to their argmax (in the trainer, between the "
           "batch and the loss)",
           ("tests/train/test_train.py::test_training_learns_from_the_soft_label_distribution",), _argmax_soft_labels),
    Mutant("ref-graph-two-nodes", "graph edges only between nodes 0 and 1 of the batch",
           ("tests/models/test_models.py::test_graph_moves_text_into_audio_node_of_every_sample",
            "tests/models/test_models.py::test_batched_edge_index_is_torch_geometric_batching"), _graph_first_sample_only),
    Mutant("ref-no-padding-masks", "no padding masks: an utterance's features depend on its batch companions",
           ("tests/models/test_models.py::test_logits_do_not_depend_on_batch_companions_or_padding",), _no_padding_masks),
    Mutant("ref-values-from-query", "cross-attention values taken from the query's own modality",
           ("tests/models/test_models.py::test_cross_attention_values_come_from_the_other_modality",
            "tests/models/test_models.py::test_biformer_text_changes_the_audio_stream"), _values_from_query),
    Mutant("ref-softmax-gate", "gate computed with a softmax over features (≈ 1/G)",
           ("tests/models/test_models.py::test_gate_is_a_per_feature_sigmoid_not_a_softmax",
            "tests/models/test_models.py::test_gated_models_use_a_sigmoid_gate_that_varies_with_input"), _softmax_gate),
    Mutant("ref-fixed-width-95", "crash on batches shorter than 95 frames (fixed width)",
           ("tests/models/test_models.py::test_one_frame_clips_run",), _fixed_width_95),
    Mutant("ref-unseeded-sds", "unseeded SDS",
           ("tests/augment/test_sds.py::test_seeded_and_deterministic",), _unseeded_sds),
    Mutant("ref-cache-key-without-encoder", "feature cache keyed without the encoder",
           ("tests/features/test_store.py::test_key_holds_every_setting_and_names_the_folder",),
           _cache_key_without_encoder),
    Mutant("ref-pickled-features", "features stored as pickles (the reference pickled CUDA tensors)",
           ("tests/features/test_store.py::test_shards_are_plain_numpy_without_pickles",), _pickled_shards),
    Mutant("ref-tts-silence-kept", "failed (silent) TTS syntheses saved and used",
           ("tests/synthesis/test_tts.py::test_failed_and_silent_syntheses_are_dropped_not_saved",), _tts_silence_kept),
    Mutant("ref-mamba-exp-a-delta", "the Mamba block uses exp(A)·Δ with a raw A instead of Mamba-1's exp(Δ·A)",
           ("tests/models/test_mamba.py::test_stack_is_mamba1_as_in_transformers",), _reference_mamba),
    Mutant("ref-metrics-present-classes", "macro metrics over the classes present only",
           ("tests/train/test_metrics.py::test_absent_classes_count_in_macro_averages",), _metrics_present_classes),
    Mutant("ref-withprob-in-sample-logits", "fusion \"WithProb\" mixes unimodal logits of models trained on the same "
           "samples (the full model's in-sample train logits instead of the out-of-fold ones)",
           ("tests/train/test_train.py::test_withprob_fuses_the_fold_models_logits_on_train",), _withprob_in_sample_logits),
]
