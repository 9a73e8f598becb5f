"""The offline log-mel audio encoder."""

from __future__ import annotations

import numpy as np
import pytest

from bber_utils.features import LogMelEncoder, build_audio_encoder


def test_frame_rate_matches_wav2vec2():
    enc = build_audio_encoder("logmel")
    for n in (400, 16000, 64000, 30617):
        assert enc.encode([np.zeros(n, dtype=np.float32)])[0].shape == ((n - 400) // 320 + 1, 80)
    assert enc.encode([np.zeros(160, dtype=np.float32)])[0].shape == (1, 80)  # a 10 ms clip
    assert enc.encode([np.zeros(0, dtype=np.float32)])[0].shape == (1, 80)  # an empty clip


def test_a_tone_lights_up_its_own_band():
    enc = LogMelEncoder(n_mels=64)
    t = np.arange(16000) / 16000
    low, high = (enc.frames(np.sin(2 * np.pi * f * t).astype(np.float32)).mean(0).argmax() for f in (300, 3000))
    assert low < high
    centers = np.argmax(enc.fbank, axis=1) * 16000 / enc.n_fft
    assert abs(centers[low] - 300) < 60 and abs(centers[high] - 3000) < 200


def test_log_compression_and_utterance_normalisation():
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    raw = LogMelEncoder().frames(wav)
    louder = LogMelEncoder().frames(wav * 10)
    np.testing.assert_allclose(louder - raw, np.log(100.0), atol=1e-2)  # gain -> constant offset in log
    norm = LogMelEncoder(normalize="utterance").frames(wav)
    np.testing.assert_allclose(norm.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(norm.std(0), 1.0, atol=1e-2)
    np.testing.assert_allclose(LogMelEncoder(normalize="utterance").frames(wav * 10), norm, atol=1e-3)


def test_options_are_checked_and_keyed():
    with pytest.raises(ValueError, match="normalize"):
        LogMelEncoder(normalize="global")
    with pytest.raises(ValueError, match="no layers"):
        build_audio_encoder("logmel", layer=3)
    assert build_audio_encoder("logmel", layer=None).key == LogMelEncoder().key
    assert LogMelEncoder(n_mels=64).key != LogMelEncoder().key


def test_a_layer_for_the_logmel_encoder_is_one_line_exit_2(tmp_path, capsys):
    """``bber extract --audio-layer 0`` with the logmel encoder ended in a ValueError traceback."""
    from bber_utils.cli import main

    (tmp_path / "manifests").mkdir()
    assert main(["extract", "--workdir", str(tmp_path), "--audio-layer", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the logmel encoder has no layers" in err, err
