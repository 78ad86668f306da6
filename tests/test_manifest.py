import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.encoding import Purpose
from ark_lattice.errors import BadSignature, Expired, Malformed, Rollback
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest, SignedManifest

ME = Identity.generate()


def manifest(seq=1, issued=1000, expires=2000):
    return PeerManifest(ME.node_id, "alpha", seq, issued, expires, ("ws://127.0.0.1:7467",), ("sync",))


def test_signed_manifest_round_trips():
    signed = manifest().sign(ME)
    back = SignedManifest.from_bytes(signed.to_bytes())
    assert back.manifest == signed.manifest
    back.check_fresh(now=1500, held_seq=1)


def test_bad_signature_expired_and_rollback_are_refused():
    signed = manifest(seq=5).sign(ME)
    tampered = SignedManifest(signed.manifest, signed.payload, bytes(64))
    with pytest.raises(BadSignature):
        SignedManifest.from_bytes(tampered.to_bytes())
    with pytest.raises(Expired):
        signed.check_fresh(now=2000)
    with pytest.raises(Rollback):
        signed.check_fresh(now=1500, held_seq=6)


def test_only_the_described_node_can_sign():
    with pytest.raises(ValueError):
        manifest().sign(Identity.generate())


@given(st.binary(max_size=400))
def test_parser_only_raises_verification_errors(data):
    try:
        SignedManifest.from_bytes(data)
    except (Malformed, BadSignature):
        pass


def test_a_validly_signed_non_canonical_manifest_is_malformed():
    """Like packets and announcements, a manifest has one encoding, even when its signer signs another."""
    import cbor2

    fields = cbor2.loads(manifest().encode())
    # An indefinite-length array decodes to the same fields but is not canonical CBOR.
    loose = b"\x9f" + b"".join(cbor2.dumps(f, canonical=True) for f in fields) + b"\xff"
    assert cbor2.loads(loose) == fields
    signed = SignedManifest(manifest(), loose, ME.sign(Purpose.MANIFEST, loose))
    with pytest.raises(Malformed, match="canonical"):
        SignedManifest.from_bytes(signed.to_bytes())
    with pytest.raises(Malformed, match="canonical"):
        PeerManifest.parse(loose)
    # The [payload, signature] pair is held to the same rule.
    good = manifest().sign(ME)
    loose_pair = b"\x9f" + cbor2.dumps(good.payload) + cbor2.dumps(good.signature) + b"\xff"
    with pytest.raises(Malformed, match="canonical"):
        SignedManifest.from_bytes(loose_pair)
