"""The ingest writer's batches (runtime/effects.py ``Effects.ingest``): one insert per run of items
from one source, dependencies first across the items of a batch, one ledger event per packet."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest
from ark_lattice.packet import Packet
from ark_lattice.protocol import actions as act
from ark_lattice.protocol.coordinator import Coordinator
from ark_lattice.runtime.effects import Effects
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store

ME, PEER_A, PEER_B = Identity.generate(), Identity.generate(), Identity.generate()
T0 = 1_700_000_000


def _packet(n: int, depends: tuple[bytes, ...] = ()) -> Packet:
    return Packet.create(
        PEER_A, topic="lab/notes", kind="note", body=b"body %d" % n, created_at=(T0 * 1000 + n) << 16,
        depends=depends,
    )


@pytest.fixture
async def effects(tmp_path: Any) -> Any:
    store = await Store.open(tmp_path / "ledger.db")
    manifest = PeerManifest(ME.node_id, "me", 1, T0, T0 + 86_400, (), ("sync/1",)).sign(ME)
    core = Coordinator(ME, bytes(32), manifest, random.Random(0))
    fx = Effects(store, core)
    puts: list[tuple[str, int]] = []
    put = store.put_packets

    async def counting_put(packets: Any, **kw: Any) -> list[Packet]:
        packets = list(packets)
        puts.append((kw["source"], len(packets)))
        return await put(packets, **kw)

    store.put_packets = counting_put  # type: ignore[method-assign]
    fx.puts = puts  # type: ignore[attr-defined]
    yield fx
    await store.close()


def _ingest(peer: Identity, *packets: Packet, link: int = 1, quarantine: bool = False) -> act.Ingest:
    return act.Ingest(link=link, peer=str(peer.node_id), packets=packets, quarantine=quarantine)


async def _stored(store: Store) -> list[tuple[bytes, str]]:
    events = [e for e in reversed(await store.events()) if e.kind == EventKind.PACKET_STORED]
    return [(e.fields["id"], e.fields["source"]) for e in events]


async def test_frames_from_one_peer_are_one_insert_and_a_dependency_in_an_earlier_frame_is_held(
    effects: Any,
) -> None:
    first = _packet(1)
    second = _packet(2, depends=(first.id,))
    third = _packet(3, depends=(second.id,))
    wanted: list[set[bytes]] = []
    ingested = effects.core.ingested

    def spy(link: int, stored: Any, quarantined: bool, missing: Any, now: float) -> Any:
        wanted.append(set(missing))
        return ingested(link, stored, quarantined, missing, now)

    effects.core.ingested = spy
    await effects.ingest([_ingest(PEER_A, first), _ingest(PEER_A, second, third)], 1.0)
    assert effects.puts == [(str(PEER_A.node_id), 3)]  # one insert for the batch
    # The dependency came in the frame before: held, so nothing is wanted for it.
    assert wanted == [set(), set()]
    source = str(PEER_A.node_id)
    assert await _stored(effects.store) == [(first.id, source), (second.id, source), (third.id, source)]


async def test_runs_from_two_sources_are_stored_in_order_and_a_packet_counts_for_its_first_bringer(
    effects: Any,
) -> None:
    p1, p2, p3 = _packet(1), _packet(2), _packet(3)
    batch = [
        _ingest(PEER_A, p1, link=1),
        _ingest(PEER_B, p1, p2, link=2),  # p1 again, from another peer
        _ingest(PEER_B, p3, link=2, quarantine=True),
    ]
    told: list[tuple[int, int, bool]] = []
    ingested = effects.core.ingested

    def spy(link: int, stored: Any, quarantined: bool, missing: Any, now: float) -> Any:
        told.append((link, len(stored), quarantined))
        return ingested(link, stored, quarantined, missing, now)

    effects.core.ingested = spy
    await effects.ingest(batch, 1.0)
    a, b = str(PEER_A.node_id), str(PEER_B.node_id)
    assert effects.puts == [(a, 1), (b, 2), (b, 1)]
    assert await _stored(effects.store) == [(p1.id, a), (p2.id, b), (p3.id, b)]
    assert told == [(1, 1, False), (2, 1, False), (2, 1, True)]  # p1 is new to link 1 only
    [held] = await effects.store.get_packets([p3.id])
    assert held.quarantined


async def test_a_dependant_without_its_dependency_waits_and_the_dependency_is_wanted(effects: Any) -> None:
    missing = _packet(1)
    dependant = _packet(2, depends=(missing.id,))
    wanted: list[set[bytes]] = []
    ingested = effects.core.ingested

    def spy(link: int, stored: Any, quarantined: bool, missing: Any, now: float) -> Any:
        wanted.append(set(missing))  # the coordinator wants these from the link (if it is open)
        return ingested(link, stored, quarantined, missing, now)

    effects.core.ingested = spy
    await effects.ingest([_ingest(PEER_A, dependant)], 1.0)
    assert wanted == [{missing.id}] and await _stored(effects.store) == []
    await effects.ingest([_ingest(PEER_A, missing)], 2.0)
    assert [i for i, _ in await _stored(effects.store)] == [missing.id, dependant.id]
