"""I/O: transports and one async driver per device kind. Knows nothing of passes or keys."""
