"""Models: Mamba encoders, unimodal classifiers, cross-modal fusion and the model registry."""
