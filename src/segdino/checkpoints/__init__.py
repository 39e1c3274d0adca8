"""Checkpoints: our format, the reference's layout, loading a model from either, the Hub,
Hugging Face model folders and their model cards."""
