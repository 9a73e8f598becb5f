"""Synthesis: text templates, text-to-speech and LLM chat backends, shared by the demo corpus and the TUG / LS-LLM augmentations."""
