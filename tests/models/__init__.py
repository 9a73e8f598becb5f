"""Tests of bber_utils.models."""
