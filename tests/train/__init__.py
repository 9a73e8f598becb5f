"""Tests of bber_utils.train."""
