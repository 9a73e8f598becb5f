"""BBER's tests, one folder per package of bber_utils."""
