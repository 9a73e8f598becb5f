"""Tests of bber_utils.augment: SDS, TUG, LS-LLM."""
