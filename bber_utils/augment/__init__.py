"""Data augmentations: SDS (stacked data sampling), TUG (template-based utterance generation), LS-LLM (soft labels)."""
