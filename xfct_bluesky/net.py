"""Network addresses: which ones stay on this machine."""

from __future__ import annotations

import ipaddress
from typing import Any


def is_loopback(address: Any) -> bool:
    """Whether ``address`` (a host, an IP address or a URL) is this machine: ``localhost``, ``127.0.0.0/8``, ``::1``."""
    text = str(address)
    if "://" in text:
        import httpx

        text = httpx.URL(text).host
    if text == "localhost":
        return True
    try:
        return ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        return False
