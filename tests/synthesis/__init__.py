"""Tests of bber_utils.synthesis."""
