"""Tests of bber_utils.features."""
