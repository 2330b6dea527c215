"""Errors shared by the checkpoint reader and the base-weight check (kept apart so neither imports the other)."""


class CheckpointError(ValueError):
    """A checkpoint directory is missing, of the wrong kind, or corrupt."""
