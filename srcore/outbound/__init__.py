"""Outbound HTTP to URLs that users or other services chose (webhooks, back-channel
calls): an SSRF policy checked on the address actually connected to, and one deadline
per request."""

from __future__ import annotations

from srcore.outbound.policy import AddressPolicy, PortRule, RefusedAddress, policy_for
from srcore.outbound.sender import BODY_CAP, Exchange, PooledSender, Sender

__all__ = [
    "BODY_CAP",
    "AddressPolicy",
    "Exchange",
    "PooledSender",
    "PortRule",
    "RefusedAddress",
    "Sender",
    "policy_for",
]
