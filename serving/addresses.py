"""Addresses as a server sees them: which host is this machine only, which network a per-address limit counts as
one client, and the refusal to serve beyond loopback without a secret."""
from __future__ import annotations

import ipaddress

from utils import ConfigError


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, or the name localhost) reaches this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def client_net(address: str) -> str:
    """The client a per-address limit counts: an IPv4 address, an IPv6 /64 (one subscriber's), and all of loopback as
    one ('loopback': a process here may bind any 127.x.y.z)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def check_beyond_loopback(host: str, secret: str, *, host_key: str, secret_key: str, what: str, how: str) -> None:
    """Refuse, at start, to serve `what` beyond this machine without a secret: a ConfigError naming `host_key` and
    `secret_key` (the caller's own setting names) and saying `how` to set the secret."""
    if secret or is_loopback(host):
        return
    raise ConfigError(f"{host_key}={host} serves {what} beyond this machine without {secret_key}: {how}, "
                      "or serve on 127.0.0.1")
