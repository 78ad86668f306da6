"""Invites and joins over WebSockets: the I/O around protocol/invites.py.

The inviter keeps its open invites in ``invites.json`` in the home (0600: it holds the PSKs) and
serves joins on the ``/join`` path of its listening port; a running node is the only writer of
that file while it runs (``federation invite`` goes through the control socket then). The joiner
dials ``/join`` at each of the invite's endpoints in turn, and on a welcome makes the federation
key its own, records the inviter as a peer with the invite's endpoints (source ``invite``) and
writes the introduction into its ledger; the inviter does the same on its side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from ark_lattice.errors import ArkLatticeError, ConfigError, Malformed, RemoteProtocolError, UsageError
from ark_lattice.federationkey import write_federation_key
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.node import LocalNode
from ark_lattice.privatefile import write_private
from ark_lattice.protocol.invites import (
    JOIN_PATH,
    MAX_JOIN_MESSAGE,
    Host,
    Invite,
    InviteBook,
    Joiner,
    Welcome,
)
from ark_lattice.store.events import EventKind
from ark_lattice.tiers import TrustTier

__all__ = [
    "JoinService",
    "load_book",
    "save_book",
    "issue_invite",
    "revoke_invite",
    "join",
    "apply_welcome",
    "advertised_endpoints",
    "INVITES_FILE",
]

log = logging.getLogger("ark_lattice.joining")

INVITES_FILE = "invites.json"
JOIN_TIMEOUT = 15.0  # seconds for each step of a join; a silent joiner holds nothing longer

Connect = Callable[[str], AbstractAsyncContextManager[Any]]


def _book_path(home: Home) -> Path:
    return home.root / INVITES_FILE


def load_book(home: Home) -> InviteBook:
    path = _book_path(home)
    try:
        docs = json.loads(path.read_text())
        return InviteBook.from_json(docs)
    except FileNotFoundError:
        return InviteBook()
    except (ValueError, KeyError, TypeError) as exc:
        reason = f"{path} is damaged ({exc.__class__.__name__}); remove it to drop all invites"
        raise ConfigError(reason) from None


def save_book(home: Home, book: InviteBook) -> None:
    """Atomically, and private from the first byte: the file holds the invites' PSKs."""
    path = _book_path(home)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_private(tmp, json.dumps(book.to_json(), indent=1).encode())
    os.replace(tmp, path)


def advertised_endpoints(bind: str, port: int) -> list[str]:
    """Where this node can be reached: the listen address, or each LAN address for a wildcard."""
    if bind in ("0.0.0.0", "::", ""):
        from ark_lattice.discovery.lan import endpoints_for, lan_addresses

        return list(endpoints_for(lan_addresses(bind)[0], port))
    host = bind if ":" not in bind else f"[{bind}]"
    return [f"ws://{host}:{port}"]


async def issue_invite(
    node: LocalNode,
    book: InviteBook,
    endpoints: Sequence[str],
    *,
    expires_in: float,
    uses: int,
    tier: TrustTier,
    now: float | None = None,
) -> Invite:
    """Make an invite, keep it in the book (saved), and record its making (not its secret)."""
    at = time.time() if now is None else now
    invite = book.issue(node.node_id, endpoints, now=at, expires_in=expires_in, uses=uses, tier=tier)
    save_book(node.home, book)
    await node.store.append_event(
        EventKind.INVITE_ISSUED,
        invite.hex_id,
        {"expires_at": invite.expires_at, "uses": uses, "tier": tier.value,
         "endpoints": list(invite.endpoints)},
    )
    return invite


async def revoke_invite(node: LocalNode, book: InviteBook, invite_id: str) -> str:
    """Drop an invite from the book (saved) and record it; returns its full id."""
    issued = book.revoke(invite_id)
    save_book(node.home, book)
    await node.store.append_event(EventKind.INVITE_REVOKED, issued.invite_id, {})
    return issued.invite_id


class JoinService:
    """The inviter's side in a running node: one book in memory, joins served on ``/join``."""

    def __init__(
        self,
        node: LocalNode,
        federation_key: Callable[[], bytes],
        *,
        on_joined: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self._federation_key = federation_key
        self._on_joined = on_joined
        self._clock = clock
        self.book = load_book(node.home)

    async def issue(
        self, endpoints: Sequence[str], *, expires_in: float, uses: int, tier: TrustTier
    ) -> Invite:
        return await issue_invite(
            self.node, self.book, endpoints, expires_in=expires_in, uses=uses, tier=tier, now=self._clock()
        )

    async def revoke(self, invite_id: str) -> str:
        return await revoke_invite(self.node, self.book, invite_id)

    def listing(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [issued.public_json(now) for issued in self.book]

    async def serve(self, ws: Any) -> None:
        """One join connection, from the request to the welcome (or a refusal) and the close."""
        from websockets.exceptions import ConnectionClosed

        host = Host(self.node.identity, self.book, self._federation_key(), self.node.config.name)
        remote = _address(getattr(ws, "remote_address", None))
        try:
            while not host.done:
                async with asyncio.timeout(JOIN_TIMEOUT):
                    data = await ws.recv()
                if not isinstance(data, bytes) or len(data) > MAX_JOIN_MESSAGE:
                    data = b""  # a text or oversize message: the host refuses it as malformed
                reply = host.receive(data, self._clock())
                if host.joined is not None:
                    await self._introduced(*host.joined)  # recorded before the key goes out
                await ws.send(reply)
        except (TimeoutError, ConnectionClosed, OSError):
            return
        except Exception:  # a bug of ours: logged, and this connection ends; the node serves on
            log.exception("a join from %s failed", remote)
        finally:
            if host.refused is not None:
                log.warning("refused a join from %s: %s", remote, host.refused.reason)
                with contextlib.suppress(ArkLatticeError):
                    await self.node.store.audit_protocol_error(
                        remote, host.refused.code, f"join: {host.refused.reason}", True
                    )
            with contextlib.suppress(Exception):
                await ws.close()

    async def _introduced(self, joiner: str, issued: Any) -> None:
        save_book(self.node.home, self.book)
        store = self.node.store
        await store.add_peer(joiner)
        try:
            await self.node.change_tier(joiner, issued.tier, actor="invite")
        except ArkLatticeError as exc:  # our policy refuses the invite's tier: the joiner is pending
            log.warning("node %s joined, but keeps the tier unknown: %s", joiner[:16], exc)
        await store.append_event(
            EventKind.PEER_INTRODUCED, joiner, {"invite": issued.invite_id, "tier": issued.tier.value}
        )
        log.info("node %s joined with invite %s as %s", joiner[:16], issued.invite_id[:8], issued.tier.value)
        if self._on_joined is not None:
            await self._on_joined(joiner)


async def join(
    identity: Identity,
    invite: Invite,
    *,
    connect: Connect | None = None,
    clock: Callable[[], float] = time.time,
) -> Welcome:
    """Dial the inviter's endpoints in turn until one welcomes us; one clear sentence if none does."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

    invite.check_fresh(clock())
    if identity.node_id == invite.inviter:
        raise UsageError("this is this node's own invite; give it to the node that should join")
    dial = connect or _connect
    failures: list[str] = []
    for url in invite.endpoints:
        joiner = Joiner(identity, invite)
        try:
            async with dial(url + JOIN_PATH) as ws:
                await ws.send(joiner.start())
                while joiner.welcome is None:
                    async with asyncio.timeout(JOIN_TIMEOUT):
                        data = await ws.recv()
                    if not isinstance(data, bytes):
                        raise Malformed("a text message")
                    reply = joiner.receive(data)
                    if reply is not None:
                        await ws.send(reply)
                return joiner.welcome
        except RemoteProtocolError as exc:
            if exc.code == "invite_refused":
                raise UsageError(f"the inviter refused the invite: {exc.reason}") from None
            failures.append(f"{url} is not the inviter or did not complete the join ({exc.reason})")
        except Malformed as exc:
            failures.append(f"{url} answered with something that is not a join ({exc})")
        except ConnectionClosed:
            failures.append(f"{url} closed the connection (is it an ark-lattice node of this version?)")
        except TimeoutError:
            failures.append(f"{url} did not answer within {JOIN_TIMEOUT:g} s")
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            failures.append(f"could not reach {url} ({exc})")
    raise UsageError("could not join: " + "; ".join(failures))


async def apply_welcome(
    node: LocalNode, invite: Invite, welcome: Welcome, *, tier: TrustTier
) -> dict[str, Any]:
    """Make the federation key ours (the old one kept beside it) and record the inviter.

    Returns what `federation join` reports: the inviter, the tiers, whether the key changed, and
    the peers of the old federation left behind (they hold the old key: no session any more)."""
    from ark_lattice.terms import worth_a_session

    path = node.home.federation_key_path
    old = node.federation_key() if path.exists() else None
    changed = old != welcome.federation_key
    inviter = str(welcome.inviter)
    store = node.store
    left_behind = [
        p.id for p in await store.list_peers() if changed and p.id != inviter and worth_a_session(p.tier)
    ]
    if changed:
        if old is not None:
            keep = path.with_name(f"federation.key.before-join-{int(time.time())}")
            os.replace(path, keep)
        # As `init` writes it: sealed to the node's key where the file system keeps no modes.
        sealed = Identity.is_sealed(node.home.key_path)
        write_federation_key(path, welcome.federation_key, node.identity, identity_sealed=sealed)
    await store.add_peer(inviter, endpoints=list(invite.endpoints), name=welcome.name)
    await node.change_tier(inviter, tier, actor="join")
    for url in invite.endpoints:
        await store.add_endpoint(url, source="invite", peer_id=inviter)
    await store.append_event(
        EventKind.FEDERATION_JOINED,
        inviter,
        {"invite": invite.hex_id, "endpoints": list(invite.endpoints), "tier": tier.value,
         "given_tier": welcome.tier, "key_changed": changed},
    )
    return {"inviter": inviter, "name": welcome.name, "tier": tier.value, "given_tier": welcome.tier,
            "key_changed": changed, "left_behind": left_behind, "endpoints": list(invite.endpoints)}


def _connect(url: str) -> AbstractAsyncContextManager[Any]:
    from websockets.asyncio.client import connect

    return connect(url, max_size=MAX_JOIN_MESSAGE, open_timeout=10, ping_interval=None, compression=None)


def _address(remote: Any) -> str:
    if isinstance(remote, tuple) and len(remote) >= 2:
        return f"{remote[0]}:{remote[1]}"
    return str(remote)
