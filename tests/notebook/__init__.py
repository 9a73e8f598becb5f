"""Tests of bber_utils.notebook and the notebooks themselves."""
