"""Errors raised by drivers. Each names the device and, where there is one, the command."""

from __future__ import annotations


class DeviceError(Exception):
    """A device failed, answered with an error, or could not be reached."""

    def __init__(self, message: str, *, device: str = "", command: str = "") -> None:
        self.device = device
        self.command = command
        where = device + (f" [{command}]" if command else "")
        super().__init__(f"{where}: {message}" if where else message)


class DeviceTimeout(DeviceError, TimeoutError):
    """No (complete) reply within the deadline."""


class DeviceDisconnected(DeviceError, ConnectionError):
    """The transport went away (USB-serial unplug, TCP drop) and is not back yet."""


class DeviceRejected(DeviceError):
    """The device answered with an error code, or a request was refused before sending."""


class LimitError(DeviceRejected, ValueError):
    """A request outside the device's configured limits; nothing was sent."""


class TransportURLError(ValueError):
    """A transport URL that cannot be used; the message names the URL and the problem."""
