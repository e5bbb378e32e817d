"""Subcommands of ``groundkey-sim``: every module here defines ``register(subparsers)``
and sets ``run`` (``(argparse.Namespace) -> int``) as a parser default."""
