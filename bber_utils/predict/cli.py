"""Inference: emotions of audio files, with or without a transcript (``bber predict``, notebook 09).

For each clip: the audio-only, text-only and fused probabilities over the seven classes and the top label.
A bimodal checkpoint carries its two unimodal encoder-classifiers, so all three come from one model: the
encoders' own heads give the unimodal probabilities, the fusion gives the fused ones. When no transcript is
given, an ASR model (Whisper) writes one and detects the language.

Bad input never stops a batch: an unreadable, empty or too short clip gets a row with its ``error`` and the
other clips are still scored; the command's exit status says whether anything failed.

Long recordings: the models were trained on utterances of a few seconds and memory grows with the length, so a
clip longer than ``LONG_SECONDS`` (60 s) gets a warning. ``window_s`` (``--window SECONDS``) scores it in
consecutive windows instead: each window's probabilities are kept (``extra["windows"]``, ``--json``) and the
clip's probabilities are their mean, weighted by window length. Every window gets the clip's transcript when one
is given, else its own ASR transcript.

Dialogue context: a model trained with ``text_context: k`` reads the previous turns of the clip's dialogue before
its transcript, as in training (``bber_utils.features.context``): ``--context TURN`` (repeatable, oldest first; every clip),
a CSV ``context`` column (one turn, or a JSON list of turns) or ``Predictor.predict(..., contexts=)``; the last k
are used, and none is needed.

Models: a trainer checkpoint or run folder, or a model folder of ``bber export`` / an ``owner/name`` Hub
repository of one (``--model``); ``--onnx`` runs its ``model.onnx`` on onnxruntime instead of PyTorch
(docs/sharing.md).

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted
file cannot run code on load. The settings stored in a checkpoint are data, checked before use; remote code of
its text encoder runs only with ``--trust-remote-code`` (``trust_remote_code=True``), never because the file
asks for it.
"""

from __future__ import annotations

import argparse
import json
import sys

from bber_utils.core.labels import CLASSES
from bber_utils.predict import checkpoint, export, inputs
from bber_utils.predict.checkpoint import CheckpointError
from bber_utils.predict.predictor import LONG_SECONDS, Predictor, check_window

EXPORT_HELP = """A trained model as a shareable model folder, the Hugging Face way (docs/sharing.md):

  config.json        the model, its sizes, label set, the encoders and feature settings its inputs need
  model.safetensors  the weights (no pickle)
  README.md          the model card: model and size, training corpora and rows, scores per corpus and split,
                     provenance, citation, intended use and limits (from the run's metrics.json)
  model.onnx         with --onnx: one graph, features in, probabilities out, dynamic batch and lengths

Use it with `bber predict --model DIR clip.wav` (--onnx: onnxruntime), `Predictor(DIR)` or
`BberModel.from_pretrained(DIR)`; publish it with `hf upload OWNER/NAME DIR` or
`BberModel.push_to_hub`.
"""


def register_cli(subparsers) -> None:
    _register_predict(subparsers)
    _register_export(subparsers)


def _register_export(subparsers) -> None:
    p = subparsers.add_parser("export", help="a trained model as a shareable folder (config.json, "
                              "model.safetensors, model card) and, with --onnx, model.onnx",
                              description=EXPORT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a run folder, its best.pt, a model folder or an owner/name Hub "
                                               "repository of one (default: the newest run of --workdir)")
    p.add_argument("--out", required=True, help="the model folder to write (an earlier export there is replaced)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (onnxruntime, CPU)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--workdir", default="runs/demo", help="where to look for the newest run")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="the run's text encoder runs its own code (e.g. jina-v3): allow it to be named")
    p.set_defaults(func=_export_cli)


def _export_cli(args) -> int:
    try:
        out = export.export_model(args.run, args.out, onnx=args.onnx, workdir=args.workdir,
                                  trust_remote_code=args.trust_remote_code, opset=args.opset)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return 0


def _register_predict(subparsers) -> None:
    p = subparsers.add_parser("predict", help="emotions of audio files (audio-only, text-only and fused)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="audio files, folders of audio files, or CSVs with path[,text,context]")
    p.add_argument("--text", action="append", help="transcript (once per clip, in order); else ASR")
    p.add_argument("--context", action="append", metavar="TURN",
                   help="a previous turn of the dialogue (repeat for several, oldest first), given to every clip: "
                        "read by models trained with text_context (the last k); per clip: a CSV context column")
    # dest "model" is not one of bber_utils.cli.PATH_OPTIONS: an owner/name Hub id must stay as typed
    p.add_argument("--model", "--checkpoint", dest="model", metavar="MODEL",
                   help="best.pt, a run folder, a model folder of `bber export` or an owner/name Hub repository of "
                        "one (default: the newest demo run)")
    p.add_argument("--revision", default=None, help="the Hub revision of an owner/name model (default: main)")
    p.add_argument("--onnx", action="store_true",
                   help="run the model folder's model.onnx on onnxruntime (CPU) instead of PyTorch")
    p.add_argument("--onnx-file", default=None, metavar="FILE",
                   help="with --onnx: this ONNX file instead (checked against the folder's config.json and weights)")
    p.add_argument("--workdir", default="runs/demo", help="where to look for the default checkpoint")
    p.add_argument("--lang", default="auto", type=str.lower, choices=["auto", "en", "ru"])
    p.add_argument("--asr", default=None, help="Whisper hub id / folder for clips without a transcript")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the checkpoint's text encoder to run its own code (e.g. jina-v3); a checkpoint's "
                        "stored settings never allow it")
    p.add_argument("--text-code-revision", default=None, metavar="COMMIT",
                   help="pin that code to a commit (default: the one stored in the checkpoint)")
    p.add_argument("--window", type=float, default=None, metavar="SECONDS",
                   help=f"score clips longer than this in windows of SECONDS (per-window probabilities with --json, "
                        f"and their mean); clips over {LONG_SECONDS:g} s without it get a warning")
    p.add_argument("--json", action="store_true", help="print one JSON object per clip (with its windows)")
    p.set_defaults(func=_cli)


def _prepare(args) -> tuple[Predictor, list[str], list, list]:
    """(predictor, paths, transcripts, contexts) from the arguments; ``ValueError`` / ``CheckpointError``."""
    check_window(args.window)
    paths, texts, contexts = inputs.collect_clips(args.paths)
    if not paths:
        raise ValueError(f"no clips to score in {' '.join(map(str, args.paths))}")
    if args.text:
        if len(args.text) != len(paths):
            raise ValueError(f"{len(paths)} clips but {len(args.text)} --text values")
        texts = args.text
    if args.context:
        contexts = [list(args.context) for _ in paths]
    predictor = Predictor(checkpoint.find_checkpoint(args.model, args.workdir), args.device, args.asr,
                          trust_remote_code=args.trust_remote_code, text_code_revision=args.text_code_revision,
                          onnx=(args.onnx_file or True) if args.onnx else False,
                          revision=args.revision)
    return predictor, paths, texts, contexts


def _cli(args) -> int:
    try:
        predictor, paths, texts, contexts = _prepare(args)
        preds = predictor.predict(paths, texts, args.lang, progress=not args.json and len(paths) > 8,
                                  window_s=args.window, contexts=contexts)
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in preds:
        if args.json:
            row = p.as_row()
            if "windows" in p.extra:
                row["windows"] = p.extra["windows"]
            print(json.dumps(row, ensure_ascii=False))
        elif p.error:
            print(f"{p.path}\tERROR\t{p.error}")
        else:
            top = sorted(zip(CLASSES, p.fused), key=lambda t: -t[1])[:3]
            print(f"{p.path}\t{p.label}\t" + " ".join(f"{c}={v:.2f}" for c, v in top) + f"\t{p.text[:60]!r}")
    failed = sum(p.error is not None for p in preds)
    if failed:
        print(f"{failed} of {len(preds)} clips failed", file=sys.stderr)
    return 1 if failed else 0
