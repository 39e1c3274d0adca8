"""Checkpoints: our format, the reference's layout, loading a model from either,
Hugging Face model folders and their model cards."""
