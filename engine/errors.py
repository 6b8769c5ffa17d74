"""The one error type for input the engine cannot use.

``InputError`` marks a problem with what a user gave (a prompt, a frame, a model name, a
setting), as opposed to a bug: its message says what was wrong and what was expected, and
``kind`` names the class of problem in a short fixed word (a log can be throttled per kind, not
per message). It is a ``ValueError``; ``UnknownName`` (a model or object id that does not exist)
is a ``KeyError`` too, so code that looks names up keeps catching what it caught.

The command line (``engine/cli.py``) reports exactly these as user errors; anything else is a
bug and keeps its traceback. The ROS node answers them as refusals (``sam2_ros/node.py``).
"""
from __future__ import annotations


class InputError(ValueError):
    """Input the engine cannot use; the text says why and what was expected."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind

    def __str__(self) -> str:  # the message as given, also for the KeyError subclass
        return str(self.args[0]) if self.args else ""


class UnknownName(InputError, KeyError):
    """A model name or object id that does not exist."""

    def __init__(self, message: str, kind: str = "unknown") -> None:
        super().__init__(message, kind)
