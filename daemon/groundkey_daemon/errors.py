"""Errors of the service. A UserError is bad input from a person (CLI argument,
config file, TLE file): the CLI prints its message, without a traceback, and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input that a person can fix; the message names the field, line or argument."""


class ConfigError(UserError, ValueError):
    """A config file that does not validate; the message names the file and field."""
