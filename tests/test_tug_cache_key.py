"""A TUG wav is reused only when the code that would speak it again is the same (the README's stale TUG row)."""

from __future__ import annotations

from types import SimpleNamespace

from bber_utils.augment import tug


def test_wav_key_changes_with_the_synthesis_version(monkeypatch):
    backend = SimpleNamespace(name="espeak", seed=42, jitter=0.1)
    before = tug._voice_key(backend, "en")
    monkeypatch.setattr(tug, "SYNTHESIS_VERSION", tug.SYNTHESIS_VERSION + 1)
    assert tug._voice_key(backend, "en") != before


def test_wav_key_names_the_espeak_version(monkeypatch):
    backend = SimpleNamespace(name="espeak", seed=42, jitter=0.1)
    monkeypatch.setattr(tug, "_engine_version", lambda name: "eSpeak NG 9.99")
    assert "eSpeak NG 9.99" in tug._voice_key(backend, "en")
