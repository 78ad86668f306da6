"""Signed LAN announcements: build, sign, verify and both carriers (beacon datagram, TXT record)."""

import ast
import base64
import dataclasses
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice import PROTOCOL_VERSION
from ark_lattice.discovery import announcement as an
from ark_lattice.discovery.announcement import (
    BEACON_MAGIC,
    MAX_DATAGRAM,
    MAX_ENDPOINTS,
    Announcement,
    SignedAnnouncement,
)
from ark_lattice.encoding import Purpose, canonical
from ark_lattice.errors import BadSignature, Expired, Malformed
from ark_lattice.identity import Identity

ME = Identity.generate()
MALLORY = Identity.generate()
NOW = 1_800_000_000


def announce(identity=ME, endpoints=("ws://10.231.0.1:7467",), *, name="alpha", now=NOW, lifetime=3600):
    return Announcement.build(identity.node_id, list(endpoints), 7467, now=now, name=name, lifetime=lifetime)


# -- strategies ---------------------------------------------------------------------------------

hosts = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
endpoints = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}:{port}",
    st.sampled_from(["ws", "wss"]), hosts, st.integers(1, 65535),
)
endpoint_lists = st.lists(endpoints, min_size=1, max_size=MAX_ENDPOINTS, unique=True)
names = st.text(max_size=80).filter(lambda s: "\x00" not in s)
identities = st.sampled_from([ME, MALLORY])


@st.composite
def announcements(draw):
    identity = draw(identities)
    eps = draw(endpoint_lists)
    now = draw(st.integers(0, 2**40))
    name = draw(names)
    lifetime = draw(st.integers(1, an.MAX_LIFETIME))
    port = draw(st.integers(1, 65535))
    return identity, Announcement.build(identity.node_id, eps, port, now=now, name=name, lifetime=lifetime)


# -- build, sign, verify ------------------------------------------------------------------------


def test_signed_announcement_verifies_until_it_expires():
    signed = announce().sign(ME)
    assert signed.verify(NOW).endpoints == ("ws://10.231.0.1:7467",)
    assert signed.verify(NOW + 3599).node_id == ME.node_id
    with pytest.raises(Expired):
        signed.verify(NOW + 3600)


def test_only_the_named_node_can_sign():
    with pytest.raises(ValueError):
        announce().sign(MALLORY)


def test_the_signature_covers_node_id_endpoints_and_expiry_with_the_beacon_purpose():
    a = announce()
    signed = a.sign(ME)
    ME.node_id.verify(Purpose.BEACON, a.encode(), signed.signature)
    with pytest.raises(BadSignature):
        ME.node_id.verify(Purpose.MANIFEST, a.encode(), signed.signature)  # no cross-purpose replay
    for changed in (
        dataclasses.replace(a, endpoints=("ws://10.231.0.66:7467",)),
        dataclasses.replace(a, expires_at=a.expires_at + 1),
        dataclasses.replace(a, node_id=MALLORY.node_id),
        dataclasses.replace(a, port=7400),
        dataclasses.replace(a, name="mallory"),
        dataclasses.replace(a, issued_at=a.issued_at + 1),
    ):
        with pytest.raises(BadSignature):
            SignedAnnouncement(changed, signed.signature).verify(NOW)


def test_another_protocol_version_is_malformed_not_badly_signed():
    a = dataclasses.replace(announce(), protocol_version=PROTOCOL_VERSION + 1)
    with pytest.raises(Malformed, match="protocol version"):
        a.sign(ME).verify(NOW)


def test_names_are_cut_to_fit_in_bytes_not_characters():
    a = announce(name="ü" * 64)
    assert len(a.name.encode()) <= an.MAX_NAME and a.name == "ü" * 32


@pytest.mark.parametrize(
    "change, match",
    [
        ({"endpoints": ()}, "1 to 8 endpoints"),
        ({"endpoints": tuple(f"ws://10.0.0.{i}:1" for i in range(9))}, "1 to 8 endpoints"),
        ({"endpoints": ("ws://a:1", "ws://a:1")}, "twice"),
        ({"endpoints": ("http://a:1",)}, "ws://HOST:PORT"),
        ({"endpoints": ("ws://a:1/path",)}, "ws://HOST:PORT"),
        ({"endpoints": ("ws://A:1",)}, "normal form"),
        ({"endpoints": ("ws://" + "a" * 100 + ":1",)}, "at most 100"),
        ({"endpoints": ("ws://a\n:1",)}, "control character"),
        ({"port": 0}, "out of range"),
        ({"port": 70000}, "out of range"),
        ({"port": True}, "63-bit"),
        ({"expires_at": NOW}, "expires before"),
        ({"expires_at": NOW + an.MAX_LIFETIME + 1}, "longer than"),
        ({"name": "x" * 65}, "at most 64 bytes"),
    ],
)
def test_check_refuses_out_of_bounds_fields(change, match):
    with pytest.raises(Malformed, match=match):
        dataclasses.replace(announce(), **change).check()


# -- carrier (a): the beacon datagram ------------------------------------------------------------


@settings(max_examples=200)
@given(announcements())
def test_beacon_round_trips(pair):
    identity, a = pair
    signed = a.sign(identity)
    data = signed.to_datagram()
    assert data.startswith(BEACON_MAGIC) and len(data) <= MAX_DATAGRAM
    back = SignedAnnouncement.from_datagram(data)
    assert back == signed
    assert back.verify(a.issued_at) == a


def test_a_full_announcement_fits_one_datagram():
    longest = [f"ws://[fd00:{i:04x}:ffff:ffff:ffff:ffff:ffff:ffff]:65535" for i in range(MAX_ENDPOINTS)]
    a = announce(endpoints=longest, name="n" * 64)
    assert len(a.sign(ME).to_datagram()) <= MAX_DATAGRAM


@settings(max_examples=500)
@given(st.binary(max_size=1500))
def test_beacon_parser_only_raises_malformed(data):
    try:
        SignedAnnouncement.from_datagram(data)
    except Malformed:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=1300))
def test_beacon_parse_and_verify_only_raise_verification_errors(body):
    try:
        SignedAnnouncement.from_datagram(BEACON_MAGIC + body).verify(NOW)
    except (Malformed, BadSignature, Expired):
        pass


@settings(max_examples=300)
@given(announcements(), st.data())
def test_a_mutated_beacon_never_verifies_as_something_else(pair, data):
    identity, a = pair
    datagram = bytearray(a.sign(identity).to_datagram())
    index = data.draw(st.integers(0, len(datagram) - 1))
    datagram[index] ^= data.draw(st.integers(1, 255))
    try:
        back = SignedAnnouncement.from_datagram(bytes(datagram)).verify(a.issued_at)
    except (Malformed, BadSignature, Expired):
        return
    assert back == a  # only a change the canonical form absorbs could ever get through


def test_forged_beacon_right_format_wrong_signature_is_refused():
    a = announce()
    forged = SignedAnnouncement(a, MALLORY.sign(Purpose.BEACON, a.encode()))
    parsed = SignedAnnouncement.from_datagram(forged.to_datagram())  # the format is right
    with pytest.raises(BadSignature):
        parsed.verify(NOW)


def test_endpoint_swapped_after_signing_is_refused():
    signed = announce().sign(ME)
    payload, signature = cbor2.loads(signed.to_datagram()[len(BEACON_MAGIC):])
    fields = cbor2.loads(payload)
    fields[7] = ["ws://10.231.0.66:7467"]
    swapped = BEACON_MAGIC + canonical([canonical(fields), signature])
    with pytest.raises(BadSignature):
        SignedAnnouncement.from_datagram(swapped).verify(NOW)


def test_unsigned_oversize_and_non_canonical_beacons_are_malformed():
    a = announce()
    signed = a.sign(ME)
    with pytest.raises(Malformed, match="unsigned"):
        SignedAnnouncement.from_datagram(BEACON_MAGIC + canonical([a.encode(), b""]))
    with pytest.raises(Malformed, match="wrong shape"):
        SignedAnnouncement.from_datagram(BEACON_MAGIC + canonical([a.encode()]))
    with pytest.raises(Malformed, match="over the limit"):
        SignedAnnouncement.from_datagram(signed.to_datagram() + bytes(MAX_DATAGRAM))
    with pytest.raises(Malformed, match="not an ark-lattice beacon"):
        SignedAnnouncement.from_datagram(b"ARKLX\x01" + signed.to_datagram()[6:])
    # The same fields in a non-canonical encoding (an indefinite-length array) are refused.
    fields = cbor2.loads(a.encode())
    loose = b"\x9f" + b"".join(cbor2.dumps(f, canonical=True) for f in fields) + b"\xff"
    with pytest.raises(Malformed, match="canonical"):
        SignedAnnouncement.from_datagram(BEACON_MAGIC + canonical([loose, signed.signature]))


# -- carrier (b): mDNS TXT properties ------------------------------------------------------------


def as_zeroconf(props):
    """TXT properties as python-zeroconf hands them over: bytes keys and values."""
    return {k.encode(): v for k, v in props.items()}


@settings(max_examples=200)
@given(announcements())
def test_txt_round_trips_within_rfc_6763_limits(pair):
    identity, a = pair
    signed = a.sign(identity)
    props = signed.to_txt()
    for key, value in props.items():
        assert len(key) <= 9 and key.isascii()
        assert len(key) + 1 + len(value) <= 255
    back = SignedAnnouncement.from_txt(as_zeroconf(props))
    assert back == signed
    assert back.verify(a.issued_at) == a


def test_txt_keys_are_case_insensitive_and_unknown_keys_ignored():
    signed = announce().sign(ME)
    props = {k.upper(): v for k, v in signed.to_txt().items()}
    props["future"] = b"whatever"
    assert SignedAnnouncement.from_txt(props).verify(NOW) == signed.announcement


txt_values = st.one_of(st.none(), st.binary(max_size=120), st.from_regex(rb"[0-9]{1,22}", fullmatch=True))
txt_keys = st.one_of(st.sampled_from(an.TXT_KEYS + ("ep8", "ep10", "ID", "x")), st.binary(max_size=12))


@settings(max_examples=500)
@given(st.dictionaries(txt_keys, txt_values, max_size=20))
def test_txt_parser_only_raises_malformed(props):
    try:
        SignedAnnouncement.from_txt(props)
    except Malformed:
        pass


@settings(max_examples=300)
@given(announcements(), st.data())
def test_a_tampered_txt_record_never_verifies_as_something_else(pair, data):
    identity, a = pair
    props = as_zeroconf(a.sign(identity).to_txt())
    key = data.draw(st.sampled_from(sorted(props)))
    props[key] = data.draw(txt_values)
    try:
        back = SignedAnnouncement.from_txt(props).verify(a.issued_at)
    except (Malformed, BadSignature, Expired):
        return
    assert back == a


def test_forged_txt_right_format_wrong_signature_is_refused():
    props = announce().sign(ME).to_txt()
    props["sig"] = base64.b64encode(MALLORY.sign(Purpose.BEACON, announce().encode()))
    with pytest.raises(BadSignature):
        SignedAnnouncement.from_txt(props).verify(NOW)


def test_txt_endpoint_swapped_or_dropped_after_signing_is_refused():
    props = announce(endpoints=["ws://10.231.0.1:7467", "ws://10.231.1.1:7467"]).sign(ME).to_txt()
    swapped = {**props, "ep1": b"ws://10.231.0.66:7467"}
    with pytest.raises(BadSignature):
        SignedAnnouncement.from_txt(swapped).verify(NOW)
    dropped = {k: v for k, v in props.items() if k != "ep1"}
    with pytest.raises(BadSignature):
        SignedAnnouncement.from_txt(dropped).verify(NOW)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"sig": None}, "unsigned"),
        ({"exp": b"017"}, "decimal"),
        ({"port": b"-1"}, "decimal"),
        ({"id": b"not-a-node-id"}, "node ID"),
        ({"ep2": b"ws://a:1"}, "without gaps"),
        ({"sig": b"!!!"}, "base64"),
        ({"sig": base64.b64encode(bytes(63))}, "wrong size"),
        ({"txtvers": b"2"}, "txtvers"),
        ({"name": b"\xff"}, "UTF-8"),
        ({"v": None}, "no value"),
    ],
)
def test_bad_txt_records_are_malformed(change, match):
    props = dict(announce().sign(ME).to_txt())
    for key, value in change.items():
        if value is None and key == "sig":
            del props[key]
        else:
            props[key] = value
    with pytest.raises(Malformed, match=match):
        SignedAnnouncement.from_txt(props)


def test_txt_duplicate_keys_differing_in_case_are_malformed():
    props = as_zeroconf(announce().sign(ME).to_txt())
    props[b"ID"] = props[b"id"]
    with pytest.raises(Malformed, match="twice"):
        SignedAnnouncement.from_txt(props)


def test_the_codec_is_sans_io():
    forbidden = {"asyncio", "socket", "zeroconf", "time", "random", "ifaddr"}
    for module in ("announcement.py", "sightings.py"):
        tree = ast.parse((Path(an.__file__).with_name(module)).read_text())
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & forbidden, module
