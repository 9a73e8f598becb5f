"""TUG speed: composition (utterances/s) and espeak-ng synthesis (utterances/s, real-time factor) per language.

Run: ``.venv/bin/python benchmarks/tug.py [--compose 2000] [--speak 60]``; results are recorded in
benchmarks/tug.md.

* Composition: ``compose_utterances`` on the built-in templates, ``--compose`` unique utterances per emotion,
  all seven emotions, per language (no audio).
* Synthesis: ``build_synthetic_corpus`` with the espeak backend (the offline default, 2 worker processes),
  ``--speak`` utterances per emotion, per language, into a fresh work folder; then the same call again, when
  every wav is reused (the resume path).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bber_utils.synthesis.templates import compose_utterances, load_templates  # noqa: E402
from bber_utils.augment.tug import build_synthetic_corpus  # noqa: E402
from bber_utils.core.labels import CLASSES  # noqa: E402


def time_composition(language: str, per_emotion: int) -> dict:
    templates = {e: load_templates(language, e) for e in CLASSES}
    t0 = time.perf_counter()
    n = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, emotion in enumerate(CLASSES):
            n += len(compose_utterances(templates[emotion], per_emotion, seed=i))
    dt = time.perf_counter() - t0
    return dict(language=language, utterances=n, seconds=dt, per_s=n / dt, shortfall_warnings=len(caught))


def time_synthesis(language: str, per_emotion: int, workdir: Path) -> dict:
    t0 = time.perf_counter()
    df = build_synthetic_corpus(workdir, language, per_emotion, tts="espeak", progress=False)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = build_synthetic_corpus(workdir, language, per_emotion, tts="espeak", progress=False)
    second = time.perf_counter() - t0
    audio_s = float(df["duration_s"].sum())
    return dict(language=language, utterances=len(df), audio_s=audio_s, first_s=first, per_s=len(df) / first,
                realtime_x=audio_s / first, rerun_s=second, reused=int(again["reused"].sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compose", type=int, default=2000, help="utterances per emotion to compose")
    parser.add_argument("--speak", type=int, default=60, help="utterances per emotion to speak")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for lang in ("en", "ru"):
        r = time_composition(lang, args.compose)
        print(f"compose {lang}: {r['utterances']} utterances in {r['seconds']:.2f} s = {r['per_s']:,.0f}/s "
              f"({r['shortfall_warnings']} shortfall warnings)")
    if shutil.which("espeak-ng") is None:
        print("espeak-ng not installed: synthesis not measured")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for lang in ("en", "ru"):
            r = time_synthesis(lang, args.speak, Path(tmp))
            print(f"espeak {lang}: {r['utterances']} utterances ({r['audio_s']:.0f} s of audio) in "
                  f"{r['first_s']:.2f} s = {r['per_s']:.1f}/s, {r['realtime_x']:.0f}x real time; rerun "
                  f"{r['rerun_s']:.2f} s ({r['reused']} reused)")


if __name__ == "__main__":
    main()
