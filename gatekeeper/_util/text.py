"""One-line messages: what a user reads when something they gave gatekeeper is wrong.

Messages quote user values, and a user value can be huge (a YAML alias bomb
expands a few kilobytes into millions of items), so every quote is bounded.
"""

from __future__ import annotations

QUOTE_LIMIT = 120  # characters of a quoted value; enough to recognise it, never a screenful


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` bounded: safe to put in a message whatever the user wrote."""
    try:
        shown = repr(value) if not isinstance(value, (list, dict, tuple, set)) or len(value) < 1000 else \
            f"<{type(value).__name__} of {len(value)} items>"
    except RecursionError:
        shown = f"<{type(value).__name__}>"
    return shorten(shown, limit)
