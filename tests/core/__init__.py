"""Tests of bber_utils.core: provenance, files, profiles."""
