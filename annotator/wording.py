"""How messages to a person read: counts with the noun in the right number ("1 proposal",
"2 proposals"), never "1 images"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, the noun plural (``plural``, else ``noun + "s"``) unless the count is 1."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
