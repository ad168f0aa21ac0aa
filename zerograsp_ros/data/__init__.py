"""Synthetic training data: labels from known geometry, sharded generation, datasets."""
