"""The physical model of an emulated az/el mount, integrated against a Clock."""

from __future__ import annotations

import math

from groundkey_protocol.clock import Clock, WallClock
from groundkey_protocol.devices.rotator import AzEl, RotatorLimits

_STEP_S = 0.02
_MAX_STEPS = 5000
STOW = AzEl(0.0, 0.0)
PARK = AzEl(0.0, 90.0)


class SimRotator:
    """Two independent axes with a maximum slew rate and acceleration (trapezoidal
    moves), travel limits (``max_az_deg`` up to 450 for an overlap region), and a
    ``stalled`` flag (a jammed mount: motors on, nothing moves). Time comes from
    ``clock``, so an accelerated SimClock moves the mount faster in wall time."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        limits: RotatorLimits | None = None,
        slew_rate_deg_s: tuple[float, float] = (6.0, 6.0),
        accel_deg_s2: tuple[float, float] = (12.0, 12.0),
        start: AzEl = STOW,
        park_position: AzEl = PARK,
    ) -> None:
        self.clock = clock or WallClock()
        self._limits = limits or RotatorLimits()
        if min(slew_rate_deg_s) <= 0 or min(accel_deg_s2) <= 0:
            raise ValueError("slew rates and accelerations must be positive")
        self.slew_rate_deg_s = slew_rate_deg_s
        self.accel_deg_s2 = accel_deg_s2
        self.park_position = park_position
        self.stalled = False
        self._pos = [start.az_deg, start.el_deg]
        self._vel = [0.0, 0.0]
        self._target = list(self._pos)
        self._t_s = self.clock.now_s()
        self.commands = 0  # set/stop/park commands received

    @property
    def limits(self) -> RotatorLimits:
        return self._limits

    @property
    def position(self) -> AzEl:
        self._advance()
        return AzEl(self._pos[0], self._pos[1])

    @property
    def target(self) -> AzEl:
        return AzEl(self._target[0], self._target[1])

    @property
    def moving(self) -> bool:
        self._advance()
        return any(v != 0.0 for v in self._vel) or self._pos != self._target

    def set_target(self, target: AzEl) -> bool:
        self.commands += 1
        if not self._limits.contains(target):
            return False
        self._advance()
        self._target = [target.az_deg, target.el_deg]
        return True

    def stop(self) -> None:
        self.commands += 1
        self._advance()
        self._target = list(self._pos)
        self._vel = [0.0, 0.0]

    def park(self) -> None:
        self.set_target(self.park_position)

    def teleport(self, position: AzEl) -> None:
        """Put the mount at ``position`` at rest (for tests and scenarios)."""
        self._advance()
        self._pos = [position.az_deg, position.el_deg]
        self._target = list(self._pos)
        self._vel = [0.0, 0.0]

    def _advance(self) -> None:
        now_s = self.clock.now_s()
        dt_s, self._t_s = now_s - self._t_s, now_s
        if dt_s <= 0.0:
            return
        if self.stalled:
            self._vel = [0.0, 0.0]
            return
        for axis in (0, 1):
            self._advance_axis(axis, dt_s)

    def _advance_axis(self, axis: int, dt_s: float) -> None:
        pos, vel, target = self._pos[axis], self._vel[axis], self._target[axis]
        if pos == target and vel == 0.0:
            return
        vmax, accel = self.slew_rate_deg_s[axis], self.accel_deg_s2[axis]
        steps = min(_MAX_STEPS, max(1, math.ceil(dt_s / _STEP_S)))
        h = dt_s / steps
        for _ in range(steps):
            err = target - pos
            if abs(err) < 1e-9 and abs(vel) <= accel * h:
                pos, vel = target, 0.0
                break
            wanted = math.copysign(min(vmax, math.sqrt(2.0 * accel * abs(err))), err)
            vel += max(-accel * h, min(accel * h, wanted - vel))
            step = vel * h
            if (step > 0) == (err > 0) and abs(step) >= abs(err):
                pos, vel = target, 0.0
                break
            pos += step
        self._pos[axis], self._vel[axis] = pos, vel
