"""The local node as one object: its home, config, identity and store.

The CLI and the runtime both go through here, so "create a node" and "publish a packet" mean the
same thing whether typed by an operator or done by a running node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import nacl.utils

from ark_lattice.errors import AlreadyExists, ConfigError, LedgerMissing, NotInitialised
from ark_lattice.federationkey import FEDERATION_KEY_SIZE, read_federation_key, write_federation_key
from ark_lattice.home import Config, Home
from ark_lattice.identity import Identity, NodeId
from ark_lattice.packet import Packet
from ark_lattice.store.events import EventKind
from ark_lattice.store.head import HEADS_FLAG
from ark_lattice.store.store import Store
from ark_lattice.tiers import TrustTier

__all__ = ["LocalNode", "FEDERATION_KEY_SIZE", "check_ledger"]


class LocalNode:
    def __init__(
        self, home: Home, config: Config, store: Store, identity: Identity | None = None
    ) -> None:
        self.home = home
        self.config = config
        self.store = store
        self._identity = identity

    @property
    def node_id(self) -> NodeId:
        return NodeId.parse(self.config.node_id)

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            raise RuntimeError("this LocalNode was opened without its key (unlock=False)")
        return self._identity

    @classmethod
    async def open(
        cls,
        home: Home,
        *,
        unlock: bool = False,
        passphrase: str | None = None,
        clock: Callable[[], float] = time.time,
        passphrase_source: Callable[[], str | None] | None = None,
    ) -> LocalNode:
        """Open an existing node; ``unlock`` loads the signing key (needed only to sign).

        Never creates a ledger (only :meth:`init` does): a home whose ledger is gone or empty is
        refused, so a node cannot silently start over with an empty history. A read-only home
        opens its ledger read-only: reading commands work, writing ones fail in one sentence.

        Without ``unlock`` the key is loaded at the first write, to sign the ledger head;
        ``passphrase_source`` gives the passphrase of a sealed key then.
        """
        config = home.load_config()
        if not home.key_path.exists():
            raise NotInitialised(f"no node identity in {home.root}; run `ark-lattice init`")
        check_ledger(home)
        identity = Identity.load(home.key_path, passphrase) if unlock else None
        if identity is not None and str(identity.node_id) != config.node_id:
            raise ConfigError(f"{home.config_path} names another node than {home.key_path} holds")
        store = await Store.open(home.ledger_path, clock=clock, read_only=not home.writable())
        if identity is not None:
            store.set_signer(identity)
        else:
            # Every write transaction ends with a head signed by the node's key (store/head.py):
            # the key is loaded at the first write, asking for a passphrase only if it is sealed.
            store.set_signer_source(lambda: cls._signing_key(home, config, passphrase_source))
        return cls(home, config, store, identity)

    @staticmethod
    def _signing_key(
        home: Home, config: Config, passphrase_source: Callable[[], str | None] | None
    ) -> Identity | None:
        sealed = Identity.is_sealed(home.key_path)
        if sealed and passphrase_source is None:
            return None  # a library caller without the key: its writes stay unsigned
        identity = Identity.load(home.key_path, passphrase_source() if passphrase_source and sealed else None)
        if str(identity.node_id) != config.node_id:
            raise ConfigError(f"{home.config_path} names another node than {home.key_path} holds")
        return identity

    @classmethod
    async def init(
        cls,
        home: Home,
        *,
        name: str | None = None,
        passphrase: str | None = None,
        federation_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> LocalNode:
        """Create identity, config, federation key and ledger; refuse if a node already exists."""
        if home.key_path.exists() or home.config_path.exists():
            raise AlreadyExists(f"a node already exists in {home.root}; nothing was changed")
        if federation_key is not None and len(federation_key) != FEDERATION_KEY_SIZE:
            raise ConfigError(f"a federation key is {FEDERATION_KEY_SIZE} bytes")
        home.create()
        created = [
            home.key_path,
            home.federation_key_path,
            home.config_path,
            home.policy_path,
            home.ledger_path,
        ]
        try:
            identity = Identity.generate()
            identity.save(home.key_path, passphrase)
            write_federation_key(  # sealed to the identity where modes are not kept (FAT sticks)
                home.federation_key_path,
                federation_key or nacl.utils.random(FEDERATION_KEY_SIZE),
                identity,
                identity_sealed=passphrase is not None,
            )
            config = Config(
                node_id=str(identity.node_id),
                name=name or f"node-{identity.node_id.short}",
                created_at=int(clock()),
            )
            home.write_config(config)
            from ark_lattice.policy import DEFAULT_POLICY_TEXT

            home.policy_path.write_text(DEFAULT_POLICY_TEXT)
            store = await Store.open(home.ledger_path, clock=clock)
            store.set_signer(identity)
            try:
                await store.append_event(
                    EventKind.NODE_INITIALISED,
                    config.node_id,
                    {"name": config.name, "sealed": passphrase is not None, HEADS_FLAG: True},
                )
            except BaseException:
                await store.close()
                raise
        except BaseException:
            # Half a node is worse than none: `init` would refuse to run again.
            for path in created:
                for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                    p.unlink(missing_ok=True)
            raise
        return cls(home, config, store, identity)

    async def close(self) -> None:
        await self.store.close()

    async def __aenter__(self) -> LocalNode:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def federation_key(self) -> bytes:
        return read_federation_key(self.home.federation_key_path, self._identity)

    def load_policy(self) -> Any:
        """The policy in force: the home's policy.toml, or the shipped default if there is none."""
        from ark_lattice.policy import Policy

        if self.home.policy_path.exists():
            return Policy.from_file(self.home.policy_path)
        return Policy.default()

    async def change_tier(self, peer_id: str, tier: TrustTier, *, actor: str = "operator") -> TrustTier:
        """Set a peer's tier if policy allows the change (hook tier_change); audited either way."""
        from ark_lattice.errors import UsageError
        from ark_lattice.policy.gate import PolicyGate

        gate = PolicyGate(self.load_policy(), self.config.node_id)
        peer = await self.store.get_peer(peer_id)
        decision, record = gate.tier_change(
            peer_id=peer_id, old_tier=peer.tier.value, new_tier=tier.value, actor=actor,
            strikes=peer.strikes, now=self.store.now_ms() / 1000,
        )
        # Its own transaction: a refusal is audited too, not rolled back with the refused change.
        await self.store.append_event(EventKind.POLICY_DECISION, "", {"decisions": [record]})
        if not decision.allowed:
            raise UsageError(f"policy refuses this tier change: {decision.reason}")
        return await self.store.set_tier(peer_id, tier, reason=actor)

    async def set_policy(self, text: str, source: str) -> Any:
        """Validate a policy and make it this node's; recorded in the ledger."""
        from ark_lattice.policy import Policy

        policy = Policy.load(text, source)  # a bad file raises here; the old one stays
        tmp = self.home.policy_path.with_suffix(".tmp")
        tmp.write_text(text)
        async with self.store.transaction():
            await self.store.append_event(
                EventKind.POLICY_SET, policy.digest, {"digest": policy.digest, "source": source}
            )
            tmp.replace(self.home.policy_path)
        return policy

    async def publish(
        self,
        *,
        topic: str,
        kind: str,
        body: bytes,
        depends: Sequence[bytes] = (),
        supersedes: bytes | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Packet:
        """Sign a new packet and store it; returns once it is durable in the ledger."""
        created_at = await self.store.next_timestamp(self.store.now_ms())
        packet = Packet.create(
            self.identity,
            topic=topic,
            kind=kind,
            body=body,
            created_at=created_at,
            depends=tuple(depends),
            supersedes=supersedes,
            meta=meta,
        )
        await self.store.put_packets([packet])
        return packet


def check_ledger(home: Home) -> None:
    """Raise :class:`LedgerMissing` unless the home's ledger exists and holds something (a
    database whose pages are all still in its write-ahead log counts)."""
    path = home.ledger_path
    wal = path.with_name(path.name + "-wal")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise LedgerMissing(
            f"the ledger {path} is missing; restore it from a backup (`ledger backup`) — "
            "only `init` creates a ledger, in an empty home"
        ) from None
    if size == 0 and (not wal.exists() or wal.stat().st_size == 0):
        raise LedgerMissing(
            f"the ledger {path} is empty (0 bytes); restore it from a backup (`ledger backup`) — "
            "only `init` creates a ledger, in an empty home"
        )
