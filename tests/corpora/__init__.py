"""Tests of bber_utils.corpora."""
