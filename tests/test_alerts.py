"""Alerts: one canonical body, every bad field refused, and evidence that proves or does not."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ark_lattice.alerts import (
    ALERT_KIND,
    DEFAULT_TOPIC,
    MAX_ALERT_BODY,
    MAX_EVIDENCE,
    MAX_MESSAGE,
    NONCE_SIZE,
    SEVERITIES,
    Alert,
    alert_packet,
    equivocation_evidence,
)
from ark_lattice.encoding import canonical
from ark_lattice.envelope import pack, unpack
from ark_lattice.errors import Malformed, UsageError
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest, SignedManifest
from ark_lattice.packet import MAX_BODY, Packet

AUTHOR = Identity.generate()
VILLAIN = Identity.generate()
BYSTANDER = Identity.generate()
NONCE = bytes(range(NONCE_SIZE))
T0 = 1_700_000_000


def alert(**fields: object) -> Alert:
    values: dict = {"severity": "critical", "message": "node leaks keys", "about": str(VILLAIN.node_id),
                    "nonce": NONCE, "evidence": None}
    values.update(fields)
    return Alert(**values)


def packet_with_body(body: bytes, kind: str = ALERT_KIND) -> Packet:
    return Packet.create(AUTHOR, topic=DEFAULT_TOPIC, kind=kind, body=body, created_at=1 << 20)


def manifest(who: Identity, name: str, seq: int = 3) -> bytes:
    return PeerManifest(who.node_id, name, seq, T0, T0 + 3600, ("ws://10.0.0.1:7400",)).sign(who).to_bytes()


def proof(about: Identity = VILLAIN) -> bytes:
    return equivocation_evidence(manifest(about, "one"), manifest(about, "two"))


# --- the body -------------------------------------------------------------------------------------


def test_round_trip_through_a_packet() -> None:
    original = alert(evidence=proof())
    packet = alert_packet(AUTHOR, original, created_at=12345)
    assert packet.header.kind == ALERT_KIND and packet.header.topic == DEFAULT_TOPIC
    assert packet.header.author == AUTHOR.node_id
    relayed = Packet.from_parts(packet.header_bytes, packet.signature, packet.body)
    assert Alert.from_packet(relayed) == original
    assert relayed.body == original.body() == canonical(original.to_fields())
    assert cbor2.loads(packet.body)[0] == 1  # versioned
    other_topic = alert_packet(AUTHOR, original, created_at=12345, topic="ops/alerts")
    assert other_topic.header.topic == "ops/alerts"


def test_round_trip_without_accused_or_evidence() -> None:
    original = alert(severity="info", about=None, message="a\tmultiline\nmessage")
    assert Alert.from_packet(alert_packet(AUTHOR, original, created_at=1)) == original


def test_the_same_text_twice_gives_two_ids() -> None:
    first = alert_packet(AUTHOR, alert(nonce=b"\x01" * NONCE_SIZE), created_at=7)
    second = alert_packet(AUTHOR, alert(nonce=b"\x02" * NONCE_SIZE), created_at=7)
    assert first.id != second.id


def test_largest_alert_fits_its_limit_and_a_packet() -> None:
    biggest = alert(message="\U0001f525" * MAX_MESSAGE, evidence=b"\xff" * MAX_EVIDENCE)
    body = biggest.body()
    assert len(body) <= MAX_ALERT_BODY <= MAX_BODY
    assert Alert.from_packet(packet_with_body(body)) == biggest


NON_CANONICAL = {
    # The integer 1 in two bytes instead of one.
    "long integer": bytes([0x86, 0x18, 0x01]) + canonical(alert().to_fields())[2:],
    # An indefinite-length list.
    "indefinite list": bytes([0x9F]) + b"".join(canonical(f) for f in alert().to_fields()) + b"\xff",
    "trailing byte": canonical(alert().to_fields()) + b"\x00",
}


@pytest.mark.parametrize("body", NON_CANONICAL.values(), ids=list(NON_CANONICAL))
def test_non_canonical_body_is_refused(body: bytes) -> None:
    with pytest.raises(Malformed):
        Alert.from_packet(packet_with_body(body))


def test_float_version_is_refused() -> None:
    fields = alert().to_fields()
    fields[0] = 1.0
    with pytest.raises(Malformed):
        Alert.from_packet(packet_with_body(cbor2.dumps(fields, canonical=True)))


def test_only_alert_packets_hold_alerts() -> None:
    with pytest.raises(Malformed, match="not an alert"):
        Alert.from_packet(packet_with_body(alert().body(), kind="note"))


BAD_FIELDS = {
    "unknown severity": {"severity": "fatal"},
    "severity not a string": {"severity": 2},
    "upper-case severity": {"severity": "CRITICAL"},
    "empty message": {"message": ""},
    "message too long": {"message": "x" * (MAX_MESSAGE + 1)},
    "message not a string": {"message": b"bytes"},
    "terminal escape in message": {"message": "fine \x1b[2J"},
    "carriage return in message": {"message": "overwrite\rthis"},
    "nul in message": {"message": "a\x00b"},
    "lone surrogate in message": {"message": "a\ud800b"},
    "about not a node id": {"about": "villain"},
    "about grouped": {"about": VILLAIN.node_id.grouped},
    "about upper case": {"about": str(VILLAIN.node_id).upper()},
    "about not ascii": {"about": "é" * 52},
    "about as bytes": {"about": VILLAIN.node_id.key},
    "nonce too short": {"nonce": b"\x00" * (NONCE_SIZE - 1)},
    "nonce too long": {"nonce": b"\x00" * (NONCE_SIZE + 1)},
    "nonce not bytes": {"nonce": "0" * NONCE_SIZE},
    "empty evidence": {"evidence": b""},
    "evidence too large": {"evidence": b"\x00" * (MAX_EVIDENCE + 1)},
    "evidence not bytes": {"evidence": "proof"},
}


@pytest.mark.parametrize("fields", BAD_FIELDS.values(), ids=list(BAD_FIELDS))
def test_each_bad_field_is_refused(fields: dict) -> None:
    bad = alert(**fields)
    with pytest.raises(Malformed):
        bad.check()
    with pytest.raises(Malformed):
        bad.body()
    with pytest.raises(Malformed):
        alert_packet(AUTHOR, bad, created_at=1)


BAD_BODIES = {
    "not a list": {"severity": "critical"},
    "too short": [1, "critical", "m", None, NONCE],
    "too long": [1, "critical", "m", None, NONCE, None, None],
    "unknown version": [2, "critical", "m", None, NONCE, None],
    "about of 31 bytes": [1, "critical", "m", b"\x01" * 31, NONCE, None],
    "about as text": [1, "critical", "m", str(VILLAIN.node_id), NONCE, None],
    "bad severity": [1, "panic", "m", None, NONCE, None],
    "nonce as text": [1, "info", "m", None, "n" * 16, None],
    "evidence as a list": [1, "info", "m", None, NONCE, [b"x"]],
}


@pytest.mark.parametrize("raw", BAD_BODIES.values(), ids=list(BAD_BODIES))
def test_each_bad_body_is_refused(raw: object) -> None:
    with pytest.raises(Malformed):
        Alert.from_packet(packet_with_body(canonical(raw)))


def test_invalid_utf8_and_garbage_are_refused() -> None:
    good = canonical(alert(message="abc").to_fields())
    with pytest.raises(Malformed):
        Alert.from_packet(packet_with_body(good.replace(b"abc", b"a\xffc")))
    for garbage in (b"", b"\xff", b"\x9f", b"not cbor at all"):
        with pytest.raises(Malformed):
            Alert.from_packet(packet_with_body(garbage))


def test_a_packet_too_big_for_an_alert_is_refused_before_decoding() -> None:
    with pytest.raises(Malformed, match="over the limit"):
        Alert.from_packet(packet_with_body(b"\x00" * (MAX_ALERT_BODY + 1)))


def test_alert_packet_refuses_a_bad_topic() -> None:
    with pytest.raises(UsageError):
        alert_packet(AUTHOR, alert(), created_at=1, topic="Bad Topic")


def test_severities() -> None:
    assert SEVERITIES == ("info", "warning", "critical")
    for severity in SEVERITIES:
        alert(severity=severity).check()


# --- self-proving evidence ------------------------------------------------------------------------


def test_equivocation_is_self_proving() -> None:
    evidence = proof()
    assert alert(evidence=evidence).self_proving()
    # Either order, any severity, and it survives the packet round trip.
    flipped = equivocation_evidence(manifest(VILLAIN, "two"), manifest(VILLAIN, "one"))
    assert alert(evidence=flipped, severity="info").self_proving()
    packet = alert_packet(AUTHOR, alert(evidence=evidence), created_at=9)
    assert Alert.from_packet(packet).self_proving()


def _resigned_badly(data: bytes) -> bytes:
    payload, signature = unpack(data, max_size=8192, what="m")
    return pack(payload, bytes([signature[0] ^ 1]) + signature[1:])


def _resigned_by(data: bytes, other: Identity) -> bytes:
    """The same payload with someone else's (valid, but wrong signer's) signature."""
    payload, _ = unpack(data, max_size=8192, what="m")
    return pack(payload, other.sign("manifest", payload))


ONE = manifest(VILLAIN, "one")
TWO = manifest(VILLAIN, "two")
NEAR_MISSES = {
    "no evidence": (str(VILLAIN.node_id), None),
    "no accused": (None, proof()),
    "the same bytes twice": (str(VILLAIN.node_id), equivocation_evidence(ONE, ONE)),
    "different sequence numbers": (
        str(VILLAIN.node_id), equivocation_evidence(ONE, manifest(VILLAIN, "two", seq=4))
    ),
    "another node than the accused": (str(BYSTANDER.node_id), proof(VILLAIN)),
    "two different nodes": (str(VILLAIN.node_id), equivocation_evidence(ONE, manifest(BYSTANDER, "x"))),
    "a bad signature": (str(VILLAIN.node_id), equivocation_evidence(ONE, _resigned_badly(TWO))),
    "signed by someone else": (
        str(VILLAIN.node_id), equivocation_evidence(ONE, _resigned_by(TWO, BYSTANDER))
    ),
    "garbage": (str(VILLAIN.node_id), b"\x00garbage"),
    "wrong tag": (str(VILLAIN.node_id), canonical(["equivocated", ONE, TWO])),
    "missing a manifest": (str(VILLAIN.node_id), canonical(["equivocation", ONE])),
    "an extra element": (str(VILLAIN.node_id), canonical(["equivocation", ONE, TWO, TWO])),
    "manifests as text": (str(VILLAIN.node_id), canonical(["equivocation", ONE.hex(), TWO.hex()])),
    "not canonical": (str(VILLAIN.node_id), b"\x9f" + b"".join(
        canonical(x) for x in ("equivocation", ONE, TWO)) + b"\xff"),
    "manifest payloads unsigned": (str(VILLAIN.node_id), canonical(["equivocation", b"a", b"b"])),
}


@pytest.mark.parametrize(("about", "evidence"), NEAR_MISSES.values(), ids=list(NEAR_MISSES))
def test_near_misses_are_not_self_proving(about: str | None, evidence: bytes | None) -> None:
    assert alert(about=about, evidence=evidence).self_proving() is False


def test_self_proving_on_an_unchecked_alert_is_false_not_an_error() -> None:
    assert alert(evidence="text").self_proving() is False
    assert alert(about=3, evidence=proof()).self_proving() is False
    assert alert(evidence=b"\x00" * (MAX_EVIDENCE + 10)).self_proving() is False


def test_evidence_from_two_parsed_manifests() -> None:
    one, two = SignedManifest.from_bytes(ONE), SignedManifest.from_bytes(TWO)
    assert one.manifest.seq == two.manifest.seq and one.payload != two.payload
    with pytest.raises(TypeError):
        equivocation_evidence(one, two)  # type: ignore[arg-type]


# --- fuzz: only Malformed, or False -------------------------------------------------------------

_CBOR_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20),
    st.binary(max_size=40), st.sampled_from([*SEVERITIES, str(VILLAIN.node_id), NONCE, 1, ONE, TWO]),
)
_CBOR = st.recursive(_CBOR_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=7), st.dictionaries(st.text(max_size=5), inner, max_size=3)
), max_leaves=20)
_BODIES = st.one_of(
    st.binary(max_size=300),
    _CBOR.map(lambda v: cbor2.dumps(v)),
    st.lists(_CBOR, min_size=6, max_size=6).map(lambda v: cbor2.dumps([1, *v[1:]])),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODIES)
def test_from_packet_accepts_only_canonical_alerts(body: bytes) -> None:
    packet = packet_with_body(body)
    try:
        parsed = Alert.from_packet(packet)
    except Malformed:
        return
    assert parsed.body() == body
    assert parsed.self_proving() in (True, False)


_EVIDENCE = st.one_of(
    st.binary(min_size=1, max_size=300),
    _CBOR.map(lambda v: cbor2.dumps(v)),
    st.tuples(
        st.sampled_from(["equivocation", "x"]),
        st.one_of(st.binary(max_size=200), st.sampled_from([ONE, TWO])),
        st.one_of(st.binary(max_size=200), st.sampled_from([ONE, TWO])),
    ).map(lambda t: cbor2.dumps(list(t))),
    # Real manifests with one byte changed anywhere.
    st.tuples(st.integers(0, 10_000), st.integers(1, 255)).map(
        lambda t: canonical(["equivocation", ONE, _flip(TWO, t[0] % len(TWO), t[1])])
    ),
)


def _flip(data: bytes, at: int, mask: int) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1:]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(evidence=_EVIDENCE, about=st.sampled_from([str(VILLAIN.node_id), str(BYSTANDER.node_id)]))
def test_self_proving_is_false_for_anything_but_a_proof(evidence: bytes, about: str) -> None:
    # The strategies can put ONE and TWO together: that, and only that, is a proof against VILLAIN.
    genuine = {equivocation_evidence(ONE, TWO), equivocation_evidence(TWO, ONE)}
    expected = about == str(VILLAIN.node_id) and evidence in genuine
    assert alert(about=about, evidence=evidence).self_proving() is expected
