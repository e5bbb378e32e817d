"""What both ends of a groundkey link agree on: device codecs, link messages,
key-distillation math, telemetry schemas. Pure: no I/O, no asyncio."""
