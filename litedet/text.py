"""Text in error lines (stdlib only, every layer): a value is quoted at most ~200 characters, so a
10 MB string in a manifest never becomes a 10 MB error line."""

from __future__ import annotations

__all__ = ["QUOTE", "short"]

QUOTE = 200  # characters of a value quoted in an error message


def short(text: str, limit: int = QUOTE) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
