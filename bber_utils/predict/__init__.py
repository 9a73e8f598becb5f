"""Prediction: emotions of audio files with a trained model."""
