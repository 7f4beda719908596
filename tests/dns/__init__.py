"""Tests of postkeep.dns against real DNS servers (tests/dnsserver.py)."""
