"""The groundkey service: config, supervisor, pass lifecycle, tracking, acquisition,
distillation, key store, publishers, health, and the ``groundkey`` CLI."""
