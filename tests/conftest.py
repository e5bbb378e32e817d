"""Shared fixtures. Tests that need a system binary call ``require_binary``: on a
developer machine without it they skip with a reason; under CI (CI=true) they fail."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(name: str, package: str) -> str:
    """Path of ``name`` (also searched in /usr/sbin); skip locally, fail in CI, when missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        message = f"{name} not found: apt-get install {package}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path
