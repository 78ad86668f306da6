"""Model rounds in the ledger (ark_lattice/models.py): updates and results round-trip, only core
updates count, and verify recomputes a result and catches changed bytes or missing inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ark_lattice.aggregation.methods import Params, aggregate
from ark_lattice.aggregation.tensors import decode_arrays, encode_arrays, output_hash
from ark_lattice.encoding import canonical
from ark_lattice.errors import Malformed, UsageError
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.models import (
    MODEL_KIND,
    UPDATE_KIND,
    decode_model,
    model_topic,
    publish_model,
    publish_update,
    published_models,
    round_inputs,
    round_updates,
    verify_model,
)
from ark_lattice.node import LocalNode
from ark_lattice.packet import Packet
from ark_lattice.store.store import StoredPacket
from ark_lattice.tiers import TrustTier

CORE_A = Identity.generate()
CORE_B = Identity.generate()
SANDBOX = Identity.generate()
STRANGER = Identity.generate()


def arrays(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "layer.w": (rng.standard_normal((4, 3)) * scale).astype(np.float32),
        "layer.b": (rng.standard_normal(3) * scale).astype(np.float64),
    }


def update_packet(
    author: Identity, round_: int, samples: int, data: dict[str, np.ndarray], *, created_at: int = 1 << 20,
    name: str = "mnist",
) -> Packet:
    return Packet.create(
        author, topic=model_topic(name), kind=UPDATE_KIND, body=encode_arrays(data),
        created_at=created_at, meta={"model": name, "round": round_, "samples": samples},
    )


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[LocalNode]:
    n = await LocalNode.init(Home(tmp_path / "node"), name="alpha")
    for who, tier in ((CORE_A, TrustTier.CORE), (CORE_B, TrustTier.CORE), (SANDBOX, TrustTier.SANDBOX)):
        await n.store.add_peer(str(who.node_id), tier=tier)
    try:
        yield n
    finally:
        await n.close()


async def fill_round(node: LocalNode) -> dict[str, bytes]:
    """Our update plus one from each core peer, one quarantined sandbox update, one stranger's."""
    ours = await publish_update(node, "mnist", 1, 100, arrays(0))
    a = update_packet(CORE_A, 1, 200, arrays(1))
    b = update_packet(CORE_B, 1, 50, arrays(2))
    await node.store.put_packets([a], source=str(CORE_A.node_id))
    await node.store.put_packets([b], source=str(CORE_A.node_id))  # relayed by A: still B's
    evil = update_packet(SANDBOX, 1, 10**9, arrays(3, scale=1e6))
    await node.store.put_packets([evil], source=str(SANDBOX.node_id), quarantined=True)
    stranger = update_packet(STRANGER, 1, 10**9, arrays(4, scale=1e6))
    await node.store.put_packets([stranger], source=str(CORE_A.node_id))
    other_round = update_packet(CORE_A, 2, 5, arrays(5))
    await node.store.put_packets([other_round], source=str(CORE_A.node_id))
    return {"ours": ours.id, "a": a.id, "b": b.id, "sandbox": evil.id, "stranger": stranger.id,
            "round2": other_round.id}


async def test_updates_and_a_model_round_trip(node: LocalNode) -> None:
    ids = await fill_round(node)
    updates = await round_updates(node.store, "mnist", 1, me=node.config.node_id)
    assert sorted(u.id for u in updates) == sorted([ids["ours"], ids["a"], ids["b"]])
    assert all(u.core for u in updates)
    assert {u.samples for u in updates} == {100, 200, 50}
    mine = next(u for u in updates if u.id == ids["ours"])
    for name, array in arrays(0).items():
        assert mine.arrays[name].dtype == array.dtype and np.array_equal(mine.arrays[name], array)

    params = Params("fedavg")
    result = aggregate(updates, params)
    packet = await publish_model(node, "mnist", 1, params, result)
    assert packet.header.kind == MODEL_KIND and packet.header.topic == "models/mnist"
    assert packet.header.meta == {"model": "mnist", "round": 1, "method": "fedavg"}

    [doc] = await published_models(node.store, "mnist", 1)
    assert doc.hex_id == packet.hex_id
    assert doc.inputs == tuple(sorted(result.inputs))
    assert doc.output_hash == output_hash(result.arrays)
    assert Params.from_json(doc.params) == params
    for name, array in result.arrays.items():
        assert np.array_equal(doc.arrays()[name], array)
    assert await published_models(node.store, "mnist", 2) == []
    assert await published_models(node.store, "other") == []
    assert [d.hex_id for d in await published_models(node.store)] == [packet.hex_id]

    ok, why = await verify_model(node.store, packet)
    assert ok, why
    assert "verified" in why


async def test_the_body_is_the_documented_canonical_list(node: LocalNode) -> None:
    await fill_round(node)
    updates = await round_updates(node.store, "mnist", 1, me=node.config.node_id)
    params = Params("median", clip=5.0)
    result = aggregate(updates, params)
    packet = await publish_model(node, "mnist", 1, params, result)
    expected = canonical([
        1, "mnist", 1, "median", params.to_json(), sorted(result.inputs), output_hash(result.arrays),
        encode_arrays(result.arrays),
    ])
    assert packet.body == expected


async def test_sandbox_and_unknown_authors_are_never_counted(node: LocalNode) -> None:
    ids = await fill_round(node)
    found = await round_inputs(node.store, "mnist", 1, me=node.config.node_id)
    counted = {u.id for u in found.updates}
    assert ids["sandbox"] not in counted and ids["stranger"] not in counted
    reasons = dict(found.excluded)
    assert "quarantined" in reasons[ids["sandbox"]]
    assert "not a core peer" in reasons[ids["stranger"]]
    assert ids["round2"] not in counted and ids["round2"] not in reasons

    # Promoted out of quarantine, a sandbox peer's update still does not count: its author is not core.
    await node.store.promote(ids["sandbox"])
    found = await round_inputs(node.store, "mnist", 1, me=node.config.node_id)
    assert ids["sandbox"] not in {u.id for u in found.updates}
    assert "sandbox" in dict(found.excluded)[ids["sandbox"]]

    result = aggregate(found.updates, Params("fedavg"))
    assert ids["sandbox"] not in result.inputs
    # The lying 10^9 samples and the 1e6 scale never reach the average.
    assert all(float(np.abs(a).max()) < 100 for a in result.arrays.values())


async def test_one_update_per_author_counts_the_latest(node: LocalNode) -> None:
    await fill_round(node)
    later = update_packet(CORE_A, 1, 7, arrays(9), created_at=1 << 40)
    await node.store.put_packets([later], source=str(CORE_A.node_id))
    found = await round_inputs(node.store, "mnist", 1, me=node.config.node_id)
    by_author = {u.author: u for u in found.updates}
    assert by_author[str(CORE_A.node_id)].id == later.id
    assert any("superseded" in why for _, why in found.excluded)


async def tampered_model(node: LocalNode, change: str) -> Packet:
    """A model packet signed by this node whose output was changed after aggregation."""
    updates = await round_updates(node.store, "mnist", 1, me=node.config.node_id)
    params = Params("fedavg")
    result = aggregate(updates, params)
    changed = {k: v.copy() for k, v in result.arrays.items()}
    changed["layer.b"][0] += 1e-6
    claimed_hash = output_hash(changed) if change == "both" else output_hash(result.arrays)
    body = canonical([
        1, "mnist", 1, "fedavg", params.to_json(), sorted(result.inputs), claimed_hash,
        encode_arrays(changed),
    ])
    return await node.publish(
        topic="models/mnist", kind=MODEL_KIND, body=body,
        meta={"model": "mnist", "round": 1, "method": "fedavg"},
    )


@pytest.mark.parametrize("change", ["bytes", "both"])
async def test_verify_catches_changed_output_bytes(node: LocalNode, change: str) -> None:
    await fill_round(node)
    packet = await tampered_model(node, change)
    ok, why = await verify_model(node.store, packet)
    assert not ok
    assert "differ" in why and packet.hex_id[:16] in why


async def test_verify_catches_changed_parameters(node: LocalNode) -> None:
    await fill_round(node)
    updates = await round_updates(node.store, "mnist", 1, me=node.config.node_id)
    result = aggregate(updates, Params("fedavg"))
    lie = Params("fedavg", max_samples=60)  # claims a cap it did not apply
    body = canonical([
        1, "mnist", 1, "fedavg", lie.to_json(), sorted(result.inputs), output_hash(result.arrays),
        encode_arrays(result.arrays),
    ])
    packet = await node.publish(topic="models/mnist", kind=MODEL_KIND, body=body, meta={})
    ok, why = await verify_model(node.store, packet)
    assert not ok and "differ" in why


async def test_verify_names_missing_inputs(node: LocalNode) -> None:
    await fill_round(node)
    updates = await round_updates(node.store, "mnist", 1, me=node.config.node_id)
    params = Params("fedavg")
    result = aggregate(updates, params)
    unseen = update_packet(CORE_B, 1, 3, arrays(11), created_at=1 << 41)  # never stored here
    body = canonical([
        1, "mnist", 1, "fedavg", params.to_json(), sorted([*result.inputs, unseen.id]),
        output_hash(result.arrays), encode_arrays(result.arrays),
    ])
    packet = Packet.create(
        CORE_A, topic="models/mnist", kind=MODEL_KIND, body=body, created_at=1 << 42, meta={}
    )
    ok, why = await verify_model(node.store, packet)
    assert not ok
    assert "1 of 4 inputs" in why and unseen.hex_id[:16] in why


async def test_verify_refuses_inputs_that_are_not_updates_of_the_round(node: LocalNode) -> None:
    ids = await fill_round(node)
    updates = await round_updates(node.store, "mnist", 1, me=node.config.node_id)
    params = Params("fedavg")
    result = aggregate(updates, params)
    body = canonical([
        1, "mnist", 1, "fedavg", params.to_json(), sorted([*result.inputs, ids["round2"]]),
        output_hash(result.arrays), encode_arrays(result.arrays),
    ])
    packet = await node.publish(topic="models/mnist", kind=MODEL_KIND, body=body, meta={})
    ok, why = await verify_model(node.store, packet)
    assert not ok and "not an update of mnist round 1" in why


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\x00garbage",
        canonical([2, "mnist", 1, "fedavg", {}, [], "00", b""]),
        canonical([1, "mnist", 1, "fedavg", {}, [b"short"], "00", b""]),
        canonical({"not": "a list"}),
    ],
)
async def test_a_malformed_model_body_is_one_sentence(node: LocalNode, body: bytes) -> None:
    packet = await node.publish(topic="models/mnist", kind=MODEL_KIND, body=body, meta={})
    stored = StoredPacket(packet, "local", 0, False)
    with pytest.raises(Malformed) as exc:
        decode_model(stored)
    assert "\n" not in str(exc.value)
    ok, why = await verify_model(node.store, packet)
    assert not ok and why
    assert await published_models(node.store, "mnist") == []  # skipped, not an error


async def test_a_malformed_update_is_left_out_with_its_reason(node: LocalNode) -> None:
    await fill_round(node)
    junk = Packet.create(
        CORE_B, topic="models/mnist", kind=UPDATE_KIND, body=b"\x00not arrays", created_at=1 << 43,
        meta={"model": "mnist", "round": 1, "samples": 3},
    )
    await node.store.put_packets([junk], source=str(CORE_B.node_id))
    found = await round_inputs(node.store, "mnist", 1, me=node.config.node_id)
    assert junk.id not in {u.id for u in found.updates}
    assert "do not decode" in dict(found.excluded)[junk.id]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"w": np.zeros(300_000, dtype=np.float32) + 1}, "too large for one packet"),
        ({"w": np.array([1.0, np.nan])}, "NaN"),
        ({"w": np.arange(3)}, "dtype"),
        ({}, "at least one"),
    ],
)
async def test_a_bad_update_is_refused_before_signing(
    node: LocalNode, data: dict[str, Any], words: str
) -> None:
    before = await node.store.packet_count()
    with pytest.raises(UsageError, match=words) as exc:
        await publish_update(node, "mnist", 1, 10, data)
    assert "\n" not in str(exc.value)
    assert await node.store.packet_count() == before


@pytest.mark.parametrize(("name", "round_", "samples"), [("Bad Name", 1, 1), ("ok", -1, 1), ("ok", 1, 0)])
async def test_bad_names_rounds_and_samples_are_refused(
    node: LocalNode, name: str, round_: int, samples: int
) -> None:
    with pytest.raises(UsageError):
        await publish_update(node, name, round_, samples, arrays(0))


def test_arrays_decode_to_what_was_encoded() -> None:
    data = arrays(3)
    back = decode_arrays(encode_arrays(data))
    assert sorted(back) == sorted(data)
    for k in data:
        assert back[k].dtype == data[k].dtype and np.array_equal(back[k], data[k])
