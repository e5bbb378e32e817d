"""Rotator (mount) drivers: one async interface, one small driver per protocol."""
