"""What the converters raise and warn: a release folder they refuse, or accept with a warning."""
from __future__ import annotations


class ReleaseError(ValueError):
    """The folder is not a valid release; the message names the problem."""


class ReleaseWarning(UserWarning):
    """Something upstream accepts with a warning too (an absent or incomplete CTC branch)."""


__all__ = ["ReleaseError", "ReleaseWarning"]
