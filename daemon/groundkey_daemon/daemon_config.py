"""Compatibility names for the daemon config, which now lives in :mod:`.config`.

``DaemonConfig`` is :class:`~groundkey_daemon.config.Config`; ``load_daemon_config``
is ``load_config(path, check_paths=True)``.
"""

from __future__ import annotations

from pathlib import Path

from groundkey_daemon.config import (
    AcquisitionConfig,
    Config,
    DistillSection,
    LinkConfig,
    ServiceSection,
    config_from_dict,
    load_config,
)

__all__ = [
    "AcquisitionConfig",
    "DaemonConfig",
    "DistillSection",
    "LinkConfig",
    "ServiceSection",
    "daemon_config_from_dict",
    "load_daemon_config",
]

DaemonConfig = Config
daemon_config_from_dict = config_from_dict


def load_daemon_config(path: str | Path) -> Config:
    """Read and fully validate a config file (paths and secrets included)."""
    return load_config(path, check_paths=True)
