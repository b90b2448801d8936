"""Argument parsing of command groups too large for ``lowbit.cli`` (thin: each handler parses
and calls a package; nothing here does the work)."""
