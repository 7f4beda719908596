"""What every config section is made of: documented fields, sizes, and the "ip:port" form."""

from __future__ import annotations

import ipaddress
from dataclasses import field
from typing import Any

KiB = 1024
MiB = 1024 * KiB


def setting(text: str, **kw: Any) -> Any:
    """A dataclass field carrying its documentation (rendered into docs/config.md)."""
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata={"doc": text})
    return field(default=kw["default"], metadata={"doc": text})


def parse_listen(value: str) -> tuple[str, int]:
    """Split "ip:port" / "[ipv6]:port" into (host, port); raises ValueError with a reason."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f'"{value}" is not "[ipv6]:port"')
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f'"{value}" is not "ip:port"')
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f'"{host}" is not an IP address') from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'"{port}" is not a port number')
    return host, int(port)
