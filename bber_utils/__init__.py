"""BBER: bilingual (English + Russian) bimodal (audio + text) emotion recognition."""

__version__ = "0.1.0"
