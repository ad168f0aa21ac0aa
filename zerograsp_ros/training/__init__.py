"""Training and evaluation commands."""
