"""Firmware simulator: emulated rotators, detectors, time tagger and the satellite
itself, built from the same protocol codecs the drivers use. CLI ``groundkey-sim``."""
