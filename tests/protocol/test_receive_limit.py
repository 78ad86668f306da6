"""The per-phase receive limit: handshake messages at their real size until the peer is known."""

from __future__ import annotations

import random

import pytest

from ark_lattice.identity import Identity
from ark_lattice.manifest import MAX_ENDPOINTS, PeerManifest
from ark_lattice.protocol import handshake
from ark_lattice.protocol.channel import MAX_FRAME
from ark_lattice.protocol.events import PeerAuthenticated
from ark_lattice.protocol.session import SETUP_FRAME_LIMIT, Role, Session, State
from ark_lattice.tiers import TrustTier

ALICE = Identity.from_seed(bytes([1]) * 32)
BOB = Identity.from_seed(bytes([2]) * 32)
FEDERATION = bytes([7]) * 32
T0 = 1_700_000_000.0


def session(identity: Identity, role: Role, *, big_manifest: bool = False, seed: int = 0) -> Session:
    # The largest manifest a node can sign: the longest name, every endpoint at its longest.
    endpoints = tuple(f"ws://{'h' * 200}.example:{i}" for i in range(MAX_ENDPOINTS)) if big_manifest else ()
    manifest = PeerManifest(
        identity.node_id, "n" * 64 if big_manifest else "n", 1, int(T0), int(T0) + 3600, endpoints
    ).sign(identity)
    return Session(identity, FEDERATION, role, manifest, now=T0, random_bytes=random.Random(seed).randbytes)


@pytest.mark.parametrize("big_manifest", [False, True])
def test_every_message_of_a_setup_fits_the_limit_the_receiver_had_before_it_read_any(
    big_manifest: bool,
) -> None:
    """Worst case of pipelining: each batch a side sends must fit the other side's limit as it was
    before it processed any message of that batch (the transport parses ahead of the session)."""
    a = session(ALICE, Role.INITIATOR, big_manifest=big_manifest, seed=1)
    b = session(BOB, Role.RESPONDER, big_manifest=big_manifest, seed=2)
    assert (a.receive_limit, b.receive_limit) == (handshake.MSG2_SIZE, handshake.MSG1_SIZE)
    seen: list[tuple[int, int]] = []
    for _ in range(20):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for event in src.events():
                if isinstance(event, PeerAuthenticated):
                    src.admit(TrustTier.CORE, T0)
            batch = src.data_to_send()
            limit = dst.receive_limit  # the driver raised it after dst's last step, before it sent
            for data in batch:
                seen.append((len(data), limit))
                assert len(data) <= limit, (len(data), limit, dst.state)
                dst.receive_data(data, T0)
                moved = True
        if not moved:
            break
    assert a.state is State.OPEN and b.state is State.OPEN
    assert a.receive_limit == b.receive_limit == MAX_FRAME
    if big_manifest:  # the manifest frame came close to the setup limit: the limit is not loose
        assert max(size for size, limit in seen if limit == SETUP_FRAME_LIMIT) > SETUP_FRAME_LIMIT // 2


def test_a_stranger_without_the_key_is_held_to_the_size_of_msg1() -> None:
    b = session(BOB, Role.RESPONDER)
    assert b.receive_limit == handshake.MSG1_SIZE < 64
    b.receive_data(bytes(handshake.MSG1_SIZE), T0)  # noise of the right size, without the key
    assert b.state is State.CLOSED
    assert handshake.MAX_MESSAGE_SIZE < 256 and SETUP_FRAME_LIMIT < 5 * 1024
