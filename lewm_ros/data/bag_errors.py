"""The one error every rosbag2 module of the data package raises (writers, readers, bag-check, bag2dataset),
and how a library error becomes one line of its message."""

from __future__ import annotations

from lewm_ros.arguments import MESSAGE_LIMIT, one_line


class BagError(ValueError):
    """A bag that cannot be written or read as asked; the message says what and where, in one line."""


def error_line(error: object) -> str:
    """A library error as one line of at most 300 characters (its type's name when it has no text)."""
    return one_line(error, MESSAGE_LIMIT)
