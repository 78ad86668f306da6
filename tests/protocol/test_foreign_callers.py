"""The responder's side of another federation, sans-I/O: a caller whose msg1 does not authenticate
is remembered by host (for `federation status` and `discover`), audited in its host's summary of
strangers' failures, and never a strike."""

import logging
import random

from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest
from ark_lattice.protocol import handshake
from ark_lattice.protocol.actions import Strike
from ark_lattice.protocol.coordinator import FOREIGN_REMEMBERED, Coordinator
from ark_lattice.protocol.session import Role

T0 = 1_700_000_000.0
OURS, THEIRS = bytes(32), bytes([1]) * 32


def coordinator() -> Coordinator:
    me = Identity.generate()
    manifest = PeerManifest(me.node_id, "me", 1, int(T0) - 60, int(T0) + 86_400, ("ws://x:1",), ()).sign(me)
    return Coordinator(me, OURS, manifest, random.Random(1))


def call_from(core: Coordinator, remote: str, now: float) -> list:
    link, session = core.open_link(Role.RESPONDER, remote, now)
    stranger = handshake.Initiator(Identity.generate(), THEIRS)
    session.receive_data(stranger.start(), now)
    return core.session_events(link, session.events(), now)


def test_a_caller_of_another_federation_is_named_once_in_the_log_and_counted_by_host(caplog):
    core = coordinator()
    with caplog.at_level(logging.WARNING, logger="ark_lattice.peering"):
        for k in range(3):
            actions = call_from(core, f"192.0.2.7:{40000 + k}", T0 + k)
            # Audited in the host's summary of strangers' failures (protocol/strangers.py), never a strike.
            assert not [a for a in actions if isinstance(a, Strike)]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "a node at 192.0.2.7 dialled us from another federation (it holds another federation key); "
        "it needs an invite or this federation's key"
    ]
    (seen,) = core.foreign_callers()
    assert seen == {"address": "192.0.2.7", "first_seen": T0, "last_seen": T0 + 2, "count": 3}


def test_the_foreign_callers_kept_are_bounded_and_the_newest():
    core = coordinator()
    for k in range(FOREIGN_REMEMBERED + 5):
        call_from(core, f"10.0.{k // 250}.{k % 250}:1", T0 + k)
    kept = core.foreign_callers()
    assert len(kept) == FOREIGN_REMEMBERED
    assert kept[-1]["address"] == f"10.0.{(FOREIGN_REMEMBERED + 4) // 250}.{(FOREIGN_REMEMBERED + 4) % 250}"
