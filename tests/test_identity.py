import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.encoding import Purpose
from ark_lattice.errors import BadPassphrase, BadSignature, IdentityError, Malformed, NotInitialised
from ark_lattice.identity import Identity, NodeId


def test_node_id_round_trips_in_every_form():
    ident = Identity.generate()
    nid = ident.node_id
    assert len(str(nid)) == 52
    assert NodeId.parse(str(nid)) == nid
    assert NodeId.parse(nid.grouped) == nid
    assert NodeId.parse(str(nid).upper()) == nid
    assert str(nid).startswith(nid.short) and len(nid.short) == 8


@given(st.text(max_size=80))
def test_node_id_parse_only_raises_malformed(text):
    try:
        NodeId.parse(text)
    except Malformed:
        pass


def test_signatures_are_bound_to_their_purpose():
    ident = Identity.generate()
    sig = ident.sign(Purpose.PACKET, b"payload")
    ident.node_id.verify(Purpose.PACKET, b"payload", sig)
    with pytest.raises(BadSignature):
        ident.node_id.verify(Purpose.MANIFEST, b"payload", sig)
    with pytest.raises(BadSignature):
        ident.node_id.verify(Purpose.PACKET, b"payloaD", sig)
    with pytest.raises(BadSignature):
        Identity.generate().node_id.verify(Purpose.PACKET, b"payload", sig)


def test_key_file_is_private_and_never_overwritten(tmp_path):
    ident = Identity.generate()
    path = tmp_path / "identity.key"
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).node_id == ident.node_id
    with pytest.raises(FileExistsError):
        Identity.generate().save(path)


def test_sealed_key_needs_the_right_passphrase(tmp_path):
    ident = Identity.generate()
    path = tmp_path / "identity.key"
    ident.save(path, passphrase="correct horse")
    assert Identity.is_sealed(path)
    assert ident.seed.hex() not in path.read_text()
    assert Identity.load(path, "correct horse").node_id == ident.node_id
    with pytest.raises(BadPassphrase, match="wrong passphrase"):
        Identity.load(path, "battery staple")
    with pytest.raises(BadPassphrase, match="sealed"):
        Identity.load(path)


def test_missing_and_damaged_key_files_are_clear_errors(tmp_path):
    with pytest.raises(NotInitialised):
        Identity.load(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("{not json")
    with pytest.raises(IdentityError):
        Identity.load(bad)
