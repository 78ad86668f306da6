"""Publishing through the running node: the CLI hands it a body, the node signs and stores it.

A sealed key is unlocked once, when the node starts (argon2id: seconds and 256 MiB); every later
``packets publish`` sends its body over the control socket (runtime/control.py) and never derives
the key again. The node pushes the new packet to its peers before it answers.

The control request is ``publish`` with ``topic``, ``kind``, ``body`` (base64), ``depends`` (ids or
unique prefixes) and ``supersedes`` (an id or prefix, or null); the answer names the packet.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from ark_lattice.errors import UsageError

__all__ = ["Publisher", "encode_request"]

log = logging.getLogger("ark_lattice.node")


def encode_request(
    *, topic: str, kind: str, body: bytes, depends: list[str] | None, supersedes: str | None
) -> dict[str, Any]:
    """The arguments of a ``publish`` control request (what the CLI sends)."""
    return {
        "topic": topic,
        "kind": kind,
        "body": base64.b64encode(body).decode(),
        "depends": list(depends or []),
        "supersedes": supersedes,
    }


class Publisher:
    """Signs and stores the packets the CLI hands the node; counts them for ``federation status``."""

    def __init__(self, node: Any, federation: Any) -> None:
        self.node = node
        self.federation = federation
        self.count = 0  # packets signed by this node process for the CLI since it started

    async def publish(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            body = base64.b64decode(str(args["body"]), validate=True)
            topic, kind = str(args["topic"]), str(args.get("kind") or "note")
        except (KeyError, binascii.Error):
            raise UsageError("a publish request needs a topic and a base64 body") from None
        store = self.node.store
        depends = [await store.resolve_packet(str(d)) for d in args.get("depends") or []]
        supersedes = args.get("supersedes")
        sup = await store.resolve_packet(str(supersedes)) if supersedes else None
        packet = await self.node.publish(topic=topic, kind=kind, body=body, depends=depends, supersedes=sup)
        self.count += 1
        log.info("signed packet %s (%s, %d bytes) for the CLI", packet.hex_id[:16], topic, len(body))
        await self.federation.local_packets_changed()
        return {"id": packet.hex_id, "topic": topic, "size": len(body), "signed_by": "node"}

    async def sign_bundle(self, args: dict[str, Any]) -> dict[str, Any]:
        """Sign the SHA-256 of a bundle's payload (bundle.py) with purpose ``bundle``."""
        from ark_lattice.encoding import Purpose

        try:
            digest = bytes.fromhex(str(args["digest"]))
        except (KeyError, ValueError):
            raise UsageError("a sign_bundle request needs the payload's SHA-256 in hex") from None
        if len(digest) != 32:
            raise UsageError("a sign_bundle request needs the payload's SHA-256 in hex")
        signature = self.node.identity.sign(Purpose.BUNDLE, digest)
        log.info("signed a packet bundle for the CLI")
        return {"signature": signature.hex(), "exporter": self.node.config.node_id}
