"""Prediction: emotions of audio files (and transcripts) with a trained model — ``bber predict``, notebook 09.

The files, bottom-up:

    checkpoint.py   find_checkpoint, load_model (weights only: a file cannot run code), CheckpointError
    card.py         the model card (README.md) of an exported model, from its config and the run's metrics.json
    hub.py          model folders (config.json + model.safetensors): BberModel (PyTorchModelHubMixin), load_trained
    onnx_model.py   export_onnx (one graph, dynamic batch and lengths), OnnxModel (onnxruntime, checked)
    export.py       export_model: a run as a model folder (+ model.onnx)
    predictor.py    Predictor(model).predict(paths, texts): audio-only, text-only and fused probabilities
    texts.py        predict_texts: a text_only model on transcripts, no audio
    inputs.py       collect_inputs (files, folders, CSVs of clips), predictions_table
    cli.py          bber predict, bber export

This ``__init__`` only re-exports.
"""

from bber_utils.predict.checkpoint import (STORED_SETTINGS, CheckpointError, checkpoint_encoders, find_checkpoint,
                                           load_model, stored_settings)
from bber_utils.predict.export import export_model
from bber_utils.predict.hub import load_trained, read_config
from bber_utils.predict.inputs import (AUDIO_SUFFIXES, collect_clips, collect_inputs, manifest_contexts,
                                       predictions_table)
from bber_utils.predict.predictor import LONG_SECONDS, MIN_SECONDS, Prediction, Predictor, check_window, text_features
from bber_utils.predict.texts import predict_texts

__all__ = ["AUDIO_SUFFIXES", "LONG_SECONDS", "MIN_SECONDS", "STORED_SETTINGS", "CheckpointError", "Prediction",
           "Predictor", "check_window", "checkpoint_encoders", "collect_clips", "collect_inputs", "export_model",
           "find_checkpoint", "load_model", "load_trained", "manifest_contexts", "predict_texts", "predictions_table",
           "read_config", "stored_settings", "text_features"]
