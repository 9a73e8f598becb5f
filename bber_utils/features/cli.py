"""``bber extract``: features for every manifest of a work folder (what notebook 02 runs)."""

from __future__ import annotations

import pandas as pd

from bber_utils.core.device import resolve_device
from bber_utils.core.errors import ConfigError, check_model_spec
from bber_utils.features.extract import extract_all


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("extract", help="extract audio and text features for every manifest (notebook 02)",
                              description="Extract (or load from the keyed store) audio and text features for "
                                          "every manifest in <workdir>/manifests; only what is missing is computed.")
    p.add_argument("--workdir", required=True, help="run folder (holds manifests/ and features/)")
    p.add_argument("--audio-encoder", default="logmel",
                   help="'logmel' (offline) or a transformers audio model: hub id or local folder, e.g. "
                        "audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim")
    p.add_argument("--text-encoder", default="e5-words",
                   help="'e5-words' or 'hashgram' (offline) or a transformers text model, e.g. "
                        "jinaai/jina-embeddings-v3 (add --trust-remote-code)")
    p.add_argument("--audio-layer", type=int, default=None, help="hidden layer of a transformers audio model")
    p.add_argument("--text-max-tokens", type=int, default=95)
    p.add_argument("--asr-model", default=None,
                   help="fill empty transcripts first: Whisper hub id / folder, faster-whisper:<path>, or "
                        "whisper-base-bundled")
    p.add_argument("--manifest", action="append", default=[], help="another manifest to include (repeatable)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--fp16", action="store_true", help="store features as float16 (half the disk)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the text model's own code (jina-v3)")
    p.add_argument("--text-code-revision", default=None, help="pin the text model's remote code to a commit")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="extract only utterances i = I (mod N) into this shard's own part of the stores (run N "
                        "of these in parallel, e.g. one per GPU), then once without --shard to merge the parts")
    p.add_argument("--flush-every", type=int, default=512, metavar="N",
                   help="write finished features to disk every N utterances ...")
    p.add_argument("--flush-seconds", type=float, default=30.0, metavar="S",
                   help="... or every S seconds, whichever comes first (a kill loses at most that much work)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args) -> int:
    check_model_spec(args.audio_encoder, ("logmel",), "--audio-encoder")  # typos fail before anything is read
    if args.audio_layer is not None and args.audio_encoder == "logmel":
        raise ConfigError("--audio-layer: the logmel encoder has no layers (a layer is for a transformers model)")
    check_model_spec(args.text_encoder, ("e5-words", "e5-windows", "hashgram"), "--text-encoder")
    resolve_device(args.device, allow_mps=True)  # "gpu", or cuda without CUDA: one line, before any work
    result = extract_all(args.workdir, audio_spec=args.audio_encoder, text_spec=args.text_encoder,
                         extra_manifests=args.manifest, asr_model=args.asr_model, audio_layer=args.audio_layer,
                         text_max_tokens=args.text_max_tokens, batch_size=args.batch_size, device=args.device,
                         store_dtype="float16" if args.fp16 else "float32",
                         trust_remote_code=args.trust_remote_code, text_code_revision=args.text_code_revision,
                         progress=not args.quiet, shard=args.shard, flush_every=args.flush_every,
                         flush_seconds=args.flush_seconds)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result.summary.to_string(index=False))
    audio = result.audio.path if result.audio is not None else "none (no manifest row has audio)"
    print(f"audio: {audio}\ntext:  {result.text.path}\n({result.seconds:.1f} s)")
    skipped = int(result.summary[["audio_skipped", "text_skipped"]].to_numpy().sum())
    if skipped:
        print(f"{skipped} utterance feature(s) skipped: see the warnings above")
    return 0
