"""Errors the core raises for bad input; nodes turn them into success=false."""


class InputError(ValueError):
    """The caller's input is unusable; the message names the problem."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match the model config."""
