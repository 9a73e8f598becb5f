"""Notebook: running the notebook sequence and what the notebooks show (figures, the model walkthrough, widgets)."""
