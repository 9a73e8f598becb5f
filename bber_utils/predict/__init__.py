"""Prediction: emotions of audio files (and transcripts) with a trained model — ``bber predict``, notebook 09.

The files, bottom-up:

    checkpoint.py   find_checkpoint, load_model (weights only: a file cannot run code), CheckpointError
    predictor.py    Predictor(checkpoint).predict(paths, texts): audio-only, text-only and fused probabilities
    texts.py        predict_texts: a text_only model on transcripts, no audio
    inputs.py       collect_inputs (files, folders, CSVs of clips), predictions_table
    cli.py          bber predict

This ``__init__`` only re-exports.
"""

from bber_utils.predict.checkpoint import (STORED_SETTINGS, CheckpointError, checkpoint_encoders, find_checkpoint,
                                           load_model, stored_settings)
from bber_utils.predict.inputs import (AUDIO_SUFFIXES, collect_clips, collect_inputs, manifest_contexts,
                                       predictions_table)
from bber_utils.predict.predictor import LONG_SECONDS, MIN_SECONDS, Prediction, Predictor, check_window, text_features
from bber_utils.predict.texts import predict_texts

__all__ = ["AUDIO_SUFFIXES", "LONG_SECONDS", "MIN_SECONDS", "STORED_SETTINGS", "CheckpointError", "Prediction",
           "Predictor", "check_window", "checkpoint_encoders", "collect_clips", "collect_inputs", "find_checkpoint",
           "load_model", "manifest_contexts", "predict_texts", "predictions_table", "stored_settings",
           "text_features"]
