"""Tests of bber_utils.predict."""
