import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.encoding import Purpose
from ark_lattice.errors import BadSignature, Malformed, UsageError
from ark_lattice.identity import Identity
from ark_lattice.packet import MAX_BODY, Packet, PacketHeader, verified_header

AUTHOR = Identity.generate()


def make(body=b"hello", **kw):
    return Packet.create(AUTHOR, topic=kw.pop("topic", "notes"), kind=kw.pop("kind", "note"),
                         body=body, created_at=kw.pop("created_at", 42), **kw)


def test_packet_round_trips_and_is_content_addressed():
    p = make()
    q = Packet.from_parts(p.header_bytes, p.signature, p.body)
    assert q.id == p.id and q.header == p.header
    assert make(b"other").id != p.id
    assert q.header.author == AUTHOR.node_id


def test_relayed_packet_keeps_its_author():
    p = make()
    # Whoever relays it, the parts are the author's: the id and signature still check out.
    relayed = Packet.from_parts(bytes(p.header_bytes), bytes(p.signature), bytes(p.body))
    assert relayed.header.author == AUTHOR.node_id


def test_tampering_is_detected():
    p = make(depends=(b"\x01" * 32,))
    with pytest.raises(Malformed, match="body"):
        Packet.from_parts(p.header_bytes, p.signature, b"hellO")
    sig = bytearray(p.signature)
    sig[0] ^= 1
    with pytest.raises(BadSignature):
        Packet.from_parts(p.header_bytes, bytes(sig), p.body)
    other = Identity.generate()
    forged = Packet.create(other, topic="notes", kind="note", body=b"hello", created_at=42)
    with pytest.raises(BadSignature):
        Packet.from_parts(forged.header_bytes, p.signature, p.body)


def test_operator_input_is_checked():
    with pytest.raises(UsageError, match="topic"):
        make(topic="Bad Topic")
    with pytest.raises(UsageError, match="kind"):
        make(kind="spam")
    with pytest.raises(UsageError, match="limit"):
        make(body=b"x" * (MAX_BODY + 1))


def test_non_canonical_header_is_refused():
    import cbor2

    p = make()
    raw = cbor2.loads(p.header_bytes)
    # An indefinite-length re-encoding decodes to the same value but is not canonical, so two
    # byte strings (two ids) would name one packet.
    indefinite = b"\x9f" + b"".join(cbor2.dumps(x, canonical=True) for x in raw) + b"\xff"
    assert cbor2.loads(indefinite) == raw
    with pytest.raises(Malformed, match="canonical"):
        PacketHeader.parse(indefinite)


@given(st.binary(max_size=600))
def test_header_parser_only_raises_malformed(data):
    try:
        PacketHeader.parse(data)
    except Malformed:
        pass


@given(
    topic=st.from_regex(r"[a-z0-9][a-z0-9._/-]{0,40}", fullmatch=True),
    body=st.binary(max_size=2000),
    created_at=st.integers(0, 2**63 - 1),
)
def test_any_valid_packet_round_trips(topic, body, created_at):
    p = Packet.create(AUTHOR, topic=topic, kind="document", body=body, created_at=created_at)
    assert Packet.from_parts(p.header_bytes, p.signature, p.body).id == p.id


def _outcome(open_, *parts):
    try:
        return open_(*parts)
    except Exception as exc:
        return type(exc), str(exc)


def _step_by_step(*parts):
    packet = Packet._open_step_by_step(*parts)
    return packet.id, packet.header


def _from_parts(*parts):
    packet = Packet.from_parts(*parts)
    return packet.id, packet.header


def _same_as_from_parts(*parts):
    """Both openings that take the short way (a received packet, a row ledger verify reads)
    end as the long way does: the same packet, or the same error with the same message."""
    reference = _outcome(_step_by_step, *parts)
    assert _outcome(verified_header, *parts) == reference
    assert _outcome(_from_parts, *parts) == reference


@given(
    topic=st.from_regex(r"[a-z0-9][a-z0-9._/-]{0,40}", fullmatch=True),
    body=st.binary(max_size=200),
    meta=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
                         st.one_of(st.integers(), st.text(max_size=8), st.booleans()), max_size=3),
)
def test_the_short_way_opens_what_the_long_way_opens(topic, body, meta):
    p = Packet.create(AUTHOR, topic=topic, kind="note", body=body, created_at=7, meta=meta)
    assert verified_header(p.header_bytes, p.signature, p.body) == (p.id, p.header)
    assert Packet.from_parts(p.header_bytes, p.signature, p.body) == p
    assert _step_by_step(p.header_bytes, p.signature, p.body) == (p.id, p.header)


@given(st.integers(0, 10_000), st.integers(0, 255))
def test_the_short_way_fails_as_the_long_way_does(at, value):
    """A header changed anywhere (re-signed by its author, or not): the same outcome, the same
    message, whichever way it fails, as ledger verify names it from that message."""
    p = make(depends=(b"\x01" * 32,), meta={"a": 1})
    header = bytearray(p.header_bytes)
    header[at % len(header)] = value
    changed = bytes(header)
    _same_as_from_parts(changed, p.signature, p.body)
    _same_as_from_parts(changed, AUTHOR.sign(Purpose.PACKET, changed), p.body)


def test_the_short_way_refuses_what_the_long_way_refuses():
    import cbor2

    p = make()
    raw = cbor2.loads(p.header_bytes)
    signed = [
        cbor2.dumps([True, *raw[1:]], canonical=True),  # version True == 1, but not its encoding
        cbor2.dumps([1.0, *raw[1:]], canonical=True),
        cbor2.dumps([*raw[:9], {"a": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}], canonical=True),
        cbor2.dumps([*raw[:9], {"a": "x" * 300}], canonical=True),  # a meta value too long
        b"\x81" * 4000 + b"\x00",  # nested past every limit
        b"\x9f" + b"".join(cbor2.dumps(x, canonical=True) for x in raw) + b"\xff",  # not canonical
        p.header_bytes + b"\x00" * 5000,  # over MAX_HEADER
        # Meta is the header's one map: keys out of canonical order, a float not in its
        # shortest form (the plain encoder writes both so; only the canonical one refuses them).
        cbor2.dumps([*raw[:9], {"bb": 1, "a": 2}]),
        cbor2.dumps([*raw[:9], {"a": 1.5}]),
    ]
    for header in signed:
        signature = AUTHOR.sign(Purpose.PACKET, header)
        _same_as_from_parts(header, signature, p.body)
        assert _outcome(verified_header, header, signature, p.body)[0] is Malformed
    _same_as_from_parts(p.header_bytes, p.signature, b"hellO")  # another body
    _same_as_from_parts(p.header_bytes, p.signature[:63], p.body)  # a short signature
    _same_as_from_parts(p.header_bytes, bytes(64), p.body)
    _same_as_from_parts(bytearray(p.header_bytes), p.signature, p.body)  # not bytes


def test_trusted_parse_reads_what_the_full_parse_reads():
    p = make(b"body", meta={"lang": "en"}, depends=(bytes(32),))
    assert PacketHeader.parse(p.header_bytes, trusted=True) == PacketHeader.parse(p.header_bytes)
    assert Packet.from_store(p.id, p.header_bytes, p.signature, p.body) == p


@pytest.mark.parametrize("data", [b"\xff", b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x81" * 4000 + b"\x00",
                                  b"\x40" * (4096 + 1), "not bytes"])
def test_trusted_parse_of_a_damaged_row_is_malformed(data):
    # Our own ledger's bytes skip the decode limits' pre-scan, not the size limit; whatever a
    # damaged row holds, the reader gets Malformed (never another exception, never a huge decode).
    with pytest.raises(Malformed):
        PacketHeader.parse(data, trusted=True)
