"""Tests of bber_utils.study."""
