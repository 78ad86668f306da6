"""Echoes (protocol/echoes.py): what a peer we only receive from sent us that we already held joins
our set for its next reconciliation, so it is not sent, decided and audited again every round."""

from __future__ import annotations

from ark_lattice.protocol.actions import Reconcile, SyncSet
from ark_lattice.protocol.echoes import Echoes
from ark_lattice.protocol.events import SyncReady
from ark_lattice.protocol.reconcile import ItemSet, sync_in_memory

from test_coordinator import CORE, PEERS, SANDBOX, T0, coordinator, make_packet, pid, session_with


def test_what_a_sandbox_peer_sent_that_we_held_joins_our_set_for_it_and_only_for_it() -> None:
    core = coordinator()
    sandbox = session_with(core, PEERS[0], SANDBOX)
    other = session_with(core, PEERS[1], SANDBOX)
    assert core.session_events(sandbox, [SyncReady(send=False, receive=True)], T0) == [
        Reconcile(sandbox, SyncSet.FROM_PEER, pid(PEERS[0]))
    ]
    held = [make_packet(PEERS[2], i) for i in range(3)]
    core.echoed(sandbox, held)
    [again] = core.session_events(sandbox, [SyncReady(send=False, receive=True)], T0)
    assert again == Reconcile(
        sandbox, SyncSet.FROM_PEER, pid(PEERS[0]), tuple((p.header.created_at, p.id) for p in held)
    )
    assert core.session_events(other, [SyncReady(send=False, receive=True)], T0) == [
        Reconcile(other, SyncSet.FROM_PEER, pid(PEERS[1]))
    ]


def test_a_peer_we_send_to_needs_no_echoes() -> None:
    core = coordinator()
    link = session_with(core, PEERS[0], CORE)
    core.session_events(link, [SyncReady(send=True, receive=True)], T0)
    core.echoed(link, [make_packet(PEERS[2], 1)])
    assert core.echoes.keys(pid(PEERS[0])) == ()


def test_with_the_echoes_the_sandbox_peer_has_nothing_left_to_send() -> None:
    # h reconciles with sandbox peer g over what g sent it (nothing) plus the echoes: g's copies of
    # packets h got elsewhere are settled, so g offers none of them again.
    theirs = [make_packet(PEERS[2], i) for i in range(500)]
    keys = [(p.header.created_at, p.id) for p in theirs]
    before = sync_in_memory(ItemSet(keys), ItemSet([]), frame_size_limit=400_000)
    assert len(before.have) == 500  # g (initiator) offers all 500 again, every round
    echoes = Echoes()
    echoes.add("g", theirs)
    after = sync_in_memory(ItemSet(keys), ItemSet(echoes.keys("g")), frame_size_limit=400_000)
    assert after.have == [] and after.need == []


def test_the_memory_per_peer_is_bounded_oldest_first() -> None:
    echoes = Echoes(max_per_peer=3)
    packets = [make_packet(PEERS[2], i) for i in range(5)]
    echoes.add("g", packets)
    assert [ident for _, ident in echoes.keys("g")] == [p.id for p in packets[2:]]
    echoes.add("g", packets[2:3])  # seen again: now the newest
    echoes.add("g", packets[:1])
    assert [ident for _, ident in echoes.keys("g")] == [packets[4].id, packets[2].id, packets[0].id]
    echoes.forget("g")
    assert echoes.keys("g") == ()
