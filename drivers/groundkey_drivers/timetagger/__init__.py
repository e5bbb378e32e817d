"""Time-tagger drivers behind one async interface, chosen by URL (see :func:`open_tagger`)."""

from __future__ import annotations

from groundkey_drivers.timetagger.base import TaggerStats, TimeTagger, open_tagger

__all__ = ["TaggerStats", "TimeTagger", "open_tagger"]
