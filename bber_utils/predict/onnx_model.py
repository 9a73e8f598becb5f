"""ONNX for CPU deployment: ``export_onnx`` writes a model as one ONNX graph, ``OnnxModel`` runs it on onnxruntime.

One graph per model, features in, probabilities out: inputs ``audio (B, Ta, Da) float32``, ``audio_mask (B, Ta)
bool``, ``text (B, Tt, Dt)``, ``text_mask (B, Tt)`` (a unimodal model: its own two), outputs ``fused_probs (B, C)``
and, for a bimodal model, ``audio_probs`` / ``text_probs`` (its encoders' own heads, as ``bber predict`` shows).
Batch, audio length and text length are dynamic axes. Why one graph rather than one per encoder and one for the
fusion: the fusion reads the encoders' whole (B, T, H) sequences, so separate graphs would only pass those
between sessions (and make three files to keep in step), while one graph gives all three outputs in one run.

The Mamba scan exports through torch's ``scan`` operator (``models.mamba.selective_scan``, ``impl="export"``,
chosen automatically while exporting), which becomes an ONNX ``Scan`` whose length is the input's: no maximum
length, no padding beyond the batch's own. Every family of ``models.MODEL_NAMES`` exports (torch-geometric's GAT
layers of the graph models included); ``tests/predict/test_onnx_model.py`` checks parity. ``export_onnx`` also
checks it before it writes anything: onnxruntime must agree with PyTorch within ``PARITY_ATOL``.

The graph carries its model's ``config.json`` and the SHA-256 of its ``model.safetensors`` as metadata, so that
``OnnxModel`` refuses, in one line, the ONNX file of another model or of other weights. Running it needs
onnxruntime and numpy only (no torch).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bber_utils.core.fileio import atomic_write
from bber_utils.predict.checkpoint import CheckpointError, allowed_classes, masked_softmax

# Heavy libraries (torch, onnx, onnxruntime) are imported inside the functions that use them, so that importing this
# module, and `bber --help`, stays fast.

META_CONFIG, META_WEIGHTS = "bber_config", "bber_weights_sha256"
COMPARED = ("model_name", "model_config", "d_audio", "d_text", "labels", "features", "encoders")
PARITY_ATOL = 1e-4


def input_names(modalities: tuple[str, ...]) -> list[str]:
    return [n for m in modalities for n in (m, f"{m}_mask")]


def output_names(modalities: tuple[str, ...]) -> list[str]:
    return ["fused_probs", "audio_probs", "text_probs"] if len(modalities) == 2 else ["fused_probs"]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _graph_module(model, modalities: tuple[str, ...], classes: list[str] | None = None):
    """``model`` (a registry model) as a module of tensors in, probabilities out (the graph's signature); a label
    set's other classes (``classes``, a model folder's) get probability 0 (their logits masked)."""
    import torch

    allowed = allowed_classes(classes)

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, audio=None, audio_mask=None, text=None, text_mask=None):
            batch = {k: v for k, v in (("audio", audio), ("audio_mask", audio_mask), ("text", text),
                                       ("text_mask", text_mask)) if v is not None}
            if len(modalities) == 1:
                return masked_softmax(self.model(batch), allowed)
            enc = self.model.encode(batch)
            return tuple(masked_softmax(x, allowed) for x in (self.model.fuse(enc), enc["audio_logits"],
                                                               enc["text_logits"]))

    return Graph().eval()


def example_inputs(cfg: dict, batch: int = 2, lengths: dict[str, int] | None = None, seed: int = 0) -> list[np.ndarray]:
    """Random features for the graph's inputs: ``batch`` clips, the first of full ``lengths[m]`` frames, the others
    shorter (masked), so that padding is exercised."""
    rng = np.random.default_rng(seed)
    lengths = lengths or {"audio": 9, "text": 5}
    out = []
    for m in modalities_of(cfg):
        n = lengths[m]
        out.append(rng.standard_normal((batch, n, cfg[f"d_{m}"])).astype(np.float32))
        real = [n] + [int(rng.integers(1, n + 1)) for _ in range(batch - 1)]
        out.append(np.arange(n)[None, :] < np.array(real)[:, None])
    return out


def modalities_of(cfg: dict) -> tuple[str, ...]:
    return tuple(cfg["encoders"])


def export_onnx(model, cfg: dict, path: str | os.PathLike, weights_sha256: str, opset: int | None = None) -> Path:
    """Write ``model`` (a registry model; its ``config.json`` is ``cfg``) as ``path``, with dynamic batch and
    length axes and the metadata ``OnnxModel`` checks; refuses (``CheckpointError``) a graph whose probabilities
    differ from PyTorch's by more than ``PARITY_ATOL`` on a short batch, a one-frame clip and 400-frame clips."""
    import torch

    mods = modalities_of(cfg)
    graph = _graph_module(model.eval(), mods, cfg.get("classes"))
    names = input_names(mods)
    kwargs = {n: torch.from_numpy(a) for n, a in zip(names, example_inputs(cfg))}
    batch = torch.export.Dim("batch")
    dims = {m: torch.export.Dim(f"{m}_frames") for m in mods}
    shapes = {n: {0: batch, 1: dims[n.removesuffix("_mask")]} for n in names}
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(graph, (), kwargs=kwargs, dynamo=True, dynamic_shapes=shapes, input_names=names,
                                    output_names=output_names(mods), opset_version=opset, external_data=False,
                                    verbose=False)
    proto = program.model_proto
    meta = {META_CONFIG: json.dumps({k: cfg[k] for k in COMPARED}, sort_keys=True), META_WEIGHTS: weights_sha256}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    blob = proto.SerializeToString()
    _check_parity(graph, blob, cfg)
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and log records (all about its own steps) are not the user's."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _check_parity(graph, blob: bytes, cfg: dict) -> None:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for inputs in (example_inputs(cfg, 3, {"audio": 11, "text": 4}, seed=1),
                   example_inputs(cfg, 1, {"audio": 1, "text": 1}, seed=2),
                   example_inputs(cfg, 2, {"audio": 400, "text": 60}, seed=3)):  # an error that grows with length
        with torch.no_grad():
            ref = graph(**{n: torch.from_numpy(a) for n, a in zip(input_names(modalities_of(cfg)), inputs)})
        ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
        got = session.run(None, dict(zip([i.name for i in session.get_inputs()], inputs)))
        worst = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
        if not worst <= PARITY_ATOL:
            raise CheckpointError(f"the ONNX graph of {cfg['model_name']} differs from PyTorch by {worst:.2e} "
                                  f"(> {PARITY_ATOL}); not written")


class OnnxModel:
    """An exported graph on onnxruntime's CPU provider, checked against its model folder's config (and weights):
    ``probabilities(arrays) -> {"fused", "audio", "text"}`` (the unimodal ones only for a bimodal model)."""

    def __init__(self, path: str | os.PathLike, cfg: dict, weights_sha256: str | None = None,
                 folder: str | os.PathLike | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such ONNX file (write one with `bber export --run RUN --out DIR "
                                  f"--onnx`)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # not ONNX, truncated, an operator this runtime lacks
            raise CheckpointError(f"{self.path}: not a readable ONNX model "
                                  f"({(str(exc).splitlines() or [''])[0][:160]})") from None
        check_graph(self.session, self.path, cfg, weights_sha256, folder)
        self.modalities = modalities_of(cfg)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def probabilities(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {n: arrays[n] for n in input_names(self.modalities)}
        out = dict(zip(self.outputs, self.session.run(None, feeds)))
        return {k.removesuffix("_probs"): v for k, v in out.items()}


def check_graph(session, path: Path, cfg: dict, weights_sha256: str | None, folder: Any) -> None:
    """``CheckpointError`` (one line) unless ``session`` is the export of the model ``cfg`` describes (and, given
    its hash, of those weights)."""
    meta = session.get_modelmeta().custom_metadata_map
    where = folder or "its model folder"
    if META_CONFIG not in meta:
        raise CheckpointError(f"{path}: not an ONNX export of a BBER model (no {META_CONFIG} metadata); write one "
                              f"with `bber export --run RUN --out DIR --onnx`")
    try:
        embedded = json.loads(meta[META_CONFIG])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its {META_CONFIG} metadata is not JSON") from None
    differ = [k for k in COMPARED if embedded.get(k) != cfg.get(k)]
    if differ:
        raise CheckpointError(f"{path}: the ONNX export of another model: its {differ[0]} "
                              f"({str(embedded.get(differ[0]))[:60]}) differs from {where}'s "
                              f"({str(cfg.get(differ[0]))[:60]})")
    if weights_sha256 and meta.get(META_WEIGHTS) != weights_sha256:
        raise CheckpointError(f"{path}: exported from other weights than {where}'s model.safetensors "
                              f"(SHA-256 {str(meta.get(META_WEIGHTS))[:12]}… vs {weights_sha256[:12]}…)")
    names = [i.name for i in session.get_inputs()]
    if names != input_names(modalities_of(cfg)):
        raise CheckpointError(f"{path}: inputs {names} are not those of a {cfg['model_name']} "
                              f"({input_names(modalities_of(cfg))})")
