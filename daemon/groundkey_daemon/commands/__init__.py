"""Subcommands of ``groundkey``: every module here defines ``register(subparsers)``,
which adds its parser and sets ``run`` (``(argparse.Namespace) -> int``) as a default.
Modules are discovered automatically; import heavy dependencies inside ``run``."""
