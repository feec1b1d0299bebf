"""Errors a user can fix: the command line prints them as one line, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, a config value, a dataset layout); the message names it."""
