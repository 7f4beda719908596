"""The `postkeep` command (moving into one module per command family)."""

from postkeep.cli.accounts import build_parser, main

__all__ = ["build_parser", "main"]
