"""The one signed envelope of packets, manifests and announcements (DESIGN §3)."""

import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from ark_lattice.discovery.announcement import (
    ANNOUNCEMENT_ENVELOPE,
    BEACON_MAGIC,
    Announcement,
    SignedAnnouncement,
)
from ark_lattice.encoding import Purpose, canonical
from ark_lattice.envelope import SIGNATURE_SIZE, Envelope, pack, unpack
from ark_lattice.errors import BadSignature, Malformed
from ark_lattice.identity import Identity
from ark_lattice.manifest import MANIFEST_ENVELOPE, PeerManifest, SignedManifest
from ark_lattice.packet import HEADER_ENVELOPE, Packet

SEED = bytes(range(32))
ME = Identity.from_seed(SEED)
OTHER = Identity.generate()
NOW = 1_800_000_000
ED25519_L = 2**252 + 27742317777372353535851937790883648493  # RFC 8032 §5.1: the group order


def vector_packet(identity=ME):
    return Packet.create(
        identity, topic="vectors/one", kind="note", body=b"hello, lattice",
        created_at=(1_800_000_000_000 << 16) | 7, depends=(bytes(32),), supersedes=b"\x01" * 32,
        meta={"lang": "en", "n": 3},
    )


def vector_manifest(identity=ME):
    return PeerManifest(
        identity.node_id, "vector", 7, 1_800_000_000, 1_800_086_400,
        ("ws://10.0.0.1:7467",), ("sync", "query"), "0.1.0",
    )


def vector_announcement(identity=ME):
    return Announcement.build(identity.node_id, ["ws://10.0.0.1:7467"], 7467, now=NOW, name="vector")


# Each object type: its envelope, an unsigned object, and how a receiver opens (payload, signature).
KINDS: dict[str, tuple[Envelope[Any], Callable[..., Any], Callable[[bytes, bytes], object]]] = {
    "packet": (
        HEADER_ENVELOPE,
        lambda identity=ME: vector_packet(identity).header,
        lambda payload, sig: Packet.from_parts(payload, sig, b"hello, lattice"),
    ),
    "manifest": (
        MANIFEST_ENVELOPE,
        vector_manifest,
        lambda payload, sig: SignedManifest.from_bytes(pack(payload, sig)),
    ),
    "announcement": (
        ANNOUNCEMENT_ENVELOPE,
        vector_announcement,
        lambda payload, sig: SignedAnnouncement.from_datagram(BEACON_MAGIC + pack(payload, sig)).verify(NOW),
    ),
}


def test_the_wire_bytes_and_ids_are_the_published_ones():
    """Fixed key, fixed fields: these bytes must never change (a change forks every ledger)."""
    p = vector_packet()
    assert p.id.hex() == "3bcd2aa99ec33c7e9b1a65edf986b2ecde7f1320efcac7eb6dfc18d59c07b786"
    assert p.signature.hex() == (
        "252581233864735261d240f3dfbca1a0f2a5dd5dd9aa02834b9f627bf026a7d7"
        "0fcbca7a1d2ae9c9e7c8e361385152be4366a2628ca2005ded0f24224627fd00"
    )
    manifest = vector_manifest().sign(ME).to_bytes()
    assert hashlib.sha256(manifest).hexdigest() == (
        "f72b6e306eb0f8972b278bd63c2da0f00f232f16a73af66199ab704f32d3cb94"
    )
    signed = vector_announcement().sign(ME)
    assert hashlib.sha256(signed.to_datagram()).hexdigest() == (
        "2fe9aff240f56fd4e85b262592944e4dbb62d2d9d55f48a678a28b369b79f411"
    )
    assert signed.to_txt()["sig"] == (
        b"vgwmXK45kbV4dGDqp07EiTrUVdf9lPT6+zU+xG3RKwzJPqnD3PLnTr1UKNuIJLYR5R/TB2IDjVL0cbGpTUrVCQ=="
    )


@pytest.mark.parametrize("kind", KINDS)
def test_each_object_opens_what_it_sealed(kind):
    envelope, make, receive = KINDS[kind]
    obj = make()
    payload, signature = envelope.seal(ME, obj)
    assert payload == envelope.encode(obj) and len(signature) == SIGNATURE_SIZE
    assert envelope.open(payload, signature) == obj
    receive(payload, signature)


@pytest.mark.parametrize("kind", KINDS)
def test_a_validly_signed_non_canonical_payload_is_malformed(kind):
    """The signer itself made the loose encoding: the signature is good, the bytes are still refused."""
    envelope, make, receive = KINDS[kind]
    fields = cbor2.loads(envelope.encode(make()))
    loose = b"\x9f" + b"".join(cbor2.dumps(f, canonical=True) for f in fields) + b"\xff"  # indefinite length
    assert cbor2.loads(loose) == fields
    signature = ME.sign(envelope.purpose, loose)
    with pytest.raises(Malformed, match="canonical"):
        envelope.open(loose, signature)
    with pytest.raises(Malformed, match="canonical"):
        receive(loose, signature)


@pytest.mark.parametrize("kind", KINDS)
def test_signatures_are_checked_strictly(kind):
    envelope, make, receive = KINDS[kind]
    payload, signature = envelope.seal(ME, make())
    # S + L verifies under a lax check (RFC 8032 §5.1.7 asks for S < L): the same message would
    # then carry two signatures, hence two packet ids.
    s = int.from_bytes(signature[32:], "little") + ED25519_L
    malleated = signature[:32] + s.to_bytes(32, "little")
    other_purpose = ME.sign(Purpose.CHECKPOINT, payload)
    other_signer = OTHER.sign(envelope.purpose, payload)
    for bad in (malleated, other_purpose, other_signer, bytes(SIGNATURE_SIZE)):
        with pytest.raises(BadSignature):
            envelope.open(payload, bad)
        with pytest.raises(BadSignature):
            receive(payload, bad)
    with pytest.raises(BadSignature):
        envelope.verify(ME.node_id, payload, signature[:-1])


@pytest.mark.parametrize("kind", KINDS)
def test_oversize_payloads_are_refused_before_decoding(kind):
    envelope, _, _ = KINDS[kind]
    with pytest.raises(Malformed, match="over the limit"):
        envelope.decode(b"\xff" * (envelope.max_size + 1))  # not even CBOR: never decoded


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_named_node_can_seal(kind):
    envelope, make, _ = KINDS[kind]
    with pytest.raises(ValueError):
        envelope.seal(OTHER, make())


def test_the_pair_is_canonical_and_signed():
    payload, signature = b"payload", bytes(range(SIGNATURE_SIZE))
    assert unpack(pack(payload, signature), max_size=200, what="thing") == (payload, signature)
    with pytest.raises(Malformed, match="unsigned"):
        unpack(pack(payload, b""), max_size=200, what="thing")
    with pytest.raises(Malformed, match="wrong shape"):
        unpack(canonical([payload]), max_size=200, what="thing")
    with pytest.raises(Malformed, match="over the limit"):
        unpack(pack(payload, signature), max_size=50, what="thing")
    loose = b"\x9f" + canonical(payload) + canonical(signature) + b"\xff"
    with pytest.raises(Malformed, match="canonical"):
        unpack(loose, max_size=200, what="thing")


def test_an_envelope_needs_a_known_purpose():
    with pytest.raises(ValueError):
        Envelope(PeerManifest, "nonsense", 100, "thing")
