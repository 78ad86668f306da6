"""C2SP tlog-checkpoint signed notes: format, signing, co-signing, and interoperability vectors.

Interoperability vectors:

* golang.org/x/mod/sumdb/note note_test.go — the PeterNeumann key pair (signer key
  ``PRIVATE+KEY+PeterNeumann+c74f20a3+AYEK…``, verifier key ``PeterNeumann+c74f20a3+ARpc…``),
  the EnochRoot verifier key, and their published signatures of the same two-line text. Ed25519 is
  deterministic (RFC 8032), so our signature line must equal Go's byte for byte.
* transparency-dev/formats log/checkpoint_test.go — a real sum.golang.org checkpoint and the
  sum.golang.org verifier key (``sum.golang.org+033de0ae+Ac4z…``).
* c2sp.org/tlog-checkpoint — the example checkpoint of the spec (its key is not published, so only
  its syntax is checked).
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.checkpoint import (
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    Checkpoint,
    NoteSignature,
    add_signature,
    key_id,
    open_note,
    sign_checkpoint,
    verify_checkpoint,
)
from ark_lattice.errors import BadSignature, Malformed
from ark_lattice.identity import Identity, NodeId

# -- published vectors ----------------------------------------------------------------------------

GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_PETER_SIG = (
    "\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_SIG = (
    "\u2014 EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINT = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n"
    "\u2014 sum.golang.org "
    "Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)

SPEC_EXAMPLE = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)


def go_verifier_key(vkey: str) -> tuple[str, bytes, bytes]:
    """(name, key ID, Ed25519 public key) of a sumdb/note verifier key ``name+hash+base64``."""
    name, key_hash, encoded = vkey.split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01  # Ed25519
    return name, bytes.fromhex(key_hash), raw[1:]


def go_signer_identity(skey: str) -> tuple[str, Identity]:
    _, _, name, _, encoded = skey.split("+", 4)
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x01
    return name, Identity.from_seed(raw[1:])


# -- fixtures -------------------------------------------------------------------------------------

LOG = Identity.from_seed(bytes([1]) * 32)
WITNESS_A = Identity.from_seed(bytes([2]) * 32)
WITNESS_B = Identity.from_seed(bytes([3]) * 32)
STRANGER = Identity.from_seed(bytes([4]) * 32)
ORIGIN = "ark-lattice.example/ledger/abcd"
CP = Checkpoint(ORIGIN, 1234, bytes(range(32)))


def signed() -> str:
    return sign_checkpoint(CP, LOG, ORIGIN)


def resign_field(note: str, line_no: int, new_value: str) -> str:
    lines = note.split("\n")
    lines[line_no] = new_value
    return "\n".join(lines)


# -- interoperability -----------------------------------------------------------------------------


@pytest.mark.parametrize("vkey", [GO_PETER_VKEY, GO_ENOCH_VKEY, SUMDB_VKEY])
def test_key_id_matches_go_sumdb_note(vkey):
    name, expected_id, public_key = go_verifier_key(vkey)
    assert key_id(name, public_key) == expected_id


def test_go_signer_key_reproduces_the_published_signature_line():
    name, identity = go_signer_identity(GO_SIGNER_KEY)
    _, peter_id, peter_key = go_verifier_key(GO_PETER_VKEY)
    assert identity.public_key == peter_key
    signature = NoteSignature.sign(GO_TEXT, identity, name)
    assert signature.key_id == peter_id
    assert signature.line() == GO_PETER_SIG


@pytest.mark.parametrize(
    "vkey,line", [(GO_PETER_VKEY, GO_PETER_SIG), (GO_ENOCH_VKEY, GO_ENOCH_SIG)]
)
def test_go_published_signatures_parse_and_verify(vkey, line):
    name, expected_id, public_key = go_verifier_key(vkey)
    signature = NoteSignature.parse_line(line[:-1])
    assert (signature.key_name, signature.key_id) == (name, expected_id)
    assert signature.is_by(NodeId(public_key), name)
    signature.verify(GO_TEXT, NodeId(public_key))
    with pytest.raises(BadSignature):
        signature.verify(GO_TEXT.replace(b"cryptography", b"cryptographY"), NodeId(public_key))


def test_real_sum_golang_org_checkpoint_verifies():
    name, _, public_key = go_verifier_key(SUMDB_VKEY)
    checkpoint = verify_checkpoint(SUMDB_CHECKPOINT, NodeId(public_key), name)
    assert checkpoint.origin == "go.sum database tree"  # origins may hold spaces
    assert checkpoint.size == 6476701
    assert checkpoint.root_hash == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")
    with pytest.raises(BadSignature):
        verify_checkpoint(SUMDB_CHECKPOINT.replace("6476701", "6476702"), NodeId(public_key), name)


def test_spec_example_parses():
    checkpoint, signatures = open_note(SPEC_EXAMPLE)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert base64.b64encode(checkpoint.root_hash) == b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert [s.key_name for s in signatures] == ["example.com/behind-the-sofa"]
    assert len(signatures[0].signature) == 64


# -- format ---------------------------------------------------------------------------------------


def test_body_is_the_c2sp_layout():
    root_b64 = base64.b64encode(CP.root_hash).decode()
    assert CP.body() == f"{ORIGIN}\n1234\n{root_b64}\n".encode()
    assert Checkpoint("o", 0, bytes(32)).body().split(b"\n")[1] == b"0"


def test_round_trip():
    assert Checkpoint.parse(CP.body()) == CP
    assert Checkpoint.parse(CP.body().decode()) == CP
    with_extensions = Checkpoint(ORIGIN, 7, bytes(32), ("ext one", "ext two"))
    assert Checkpoint.parse(with_extensions.body()) == with_extensions
    note = sign_checkpoint(with_extensions, LOG, ORIGIN)
    assert open_note(note)[0] == with_extensions
    assert open_note(note.encode())[0] == with_extensions


def test_signed_note_layout():
    note = signed()
    body, _, signature_block = note.partition("\n\n")
    assert (body + "\n").encode() == CP.body()
    assert signature_block.startswith(f"\u2014 {ORIGIN} ")
    assert signature_block.endswith("\n") and signature_block.count("\n") == 1
    raw = base64.b64decode(signature_block.split(" ")[2])
    assert raw[:4] == key_id(ORIGIN, LOG.public_key)
    assert len(raw) == 4 + 64
    _, signatures = open_note(note)
    assert signatures == [NoteSignature(ORIGIN, key_id(ORIGIN, LOG.public_key), raw[4:])]


@pytest.mark.parametrize(
    "body",
    [
        "origin\n12\n",  # no root line
        "origin\n12\n" + "A" * 44,  # no final newline
        "\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # empty origin
        "o\n012\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # leading zero
        "o\n+12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n 12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n1_2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n\u0661\u0662\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # Arabic-Indic digits
        "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "o\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # 2**64
        "o\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n",  # 31 bytes
        "o\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=\n",  # non-canonical padding bits
        "o\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",  # unpadded
        "o\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",  # empty extension line
        "o\r\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # control character
    ],
)
def test_malformed_bodies_are_refused(body):
    with pytest.raises(Malformed):
        Checkpoint.parse(body)


def test_checkpoint_fields_are_checked():
    for bad in [
        lambda: Checkpoint("", 1, bytes(32)),
        lambda: Checkpoint("two\nlines", 1, bytes(32)),
        lambda: Checkpoint("o", -1, bytes(32)),
        lambda: Checkpoint("o", 2**64, bytes(32)),
        lambda: Checkpoint("o", True, bytes(32)),
        lambda: Checkpoint("o", 1, bytes(31)),
        lambda: Checkpoint("o", 1, bytes(32), ("",)),
        lambda: Checkpoint("o", 1, bytes(32), ("a\nb",)),
        lambda: Checkpoint("o" * MAX_NOTE_SIZE, 1, bytes(32)),
        lambda: Checkpoint("\udc80", 1, bytes(32)),
    ]:
        with pytest.raises(Malformed):
            bad()
    assert Checkpoint("o", 2**64 - 1, bytes(32)).size == 2**64 - 1


@pytest.mark.parametrize(
    "note",
    [
        "",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # no signatures
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n",  # blank line, nothing after
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k AAAAAAAA",  # no newline
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n- k AAAAAAAA\n",  # not an em dash
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 bad name AAAAAAAA\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 a+b AAAAAAAA\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014  AAAAAAAA\n",  # empty name
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k AAAA\n",  # only a key ID
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k !!!!\n",
        "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k AAAAAAAA\nextra\n",
        "\x01o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 k AAAAAAAA\n",
    ],
)
def test_malformed_notes_are_refused(note):
    with pytest.raises(Malformed):
        open_note(note)
    with pytest.raises(Malformed):
        verify_checkpoint(note, LOG.node_id, ORIGIN)


def test_invalid_utf8_and_oversize_notes_are_refused():
    note = signed().encode()
    with pytest.raises(Malformed):
        open_note(b"\xff" + note)
    with pytest.raises(Malformed):
        open_note(note + b"\xe2\x80" + b"\n")
    padding = "\u2014 k " + base64.b64encode(bytes(6200)).decode() + "\n"
    with pytest.raises(Malformed):
        open_note(signed() + padding)
    with pytest.raises(Malformed):
        open_note(12345)  # type: ignore[arg-type]


# -- signing and verification ---------------------------------------------------------------------


def test_sign_then_verify():
    assert verify_checkpoint(signed(), LOG.node_id, ORIGIN) == CP
    assert verify_checkpoint(signed().encode(), LOG.node_id, ORIGIN) == CP


def test_tampered_size_is_rejected():
    with pytest.raises(BadSignature):
        verify_checkpoint(resign_field(signed(), 1, "1235"), LOG.node_id, ORIGIN)


def test_tampered_root_is_rejected():
    other_root = base64.b64encode(bytes(32)).decode()
    with pytest.raises(BadSignature):
        verify_checkpoint(resign_field(signed(), 2, other_root), LOG.node_id, ORIGIN)


def test_tampered_origin_and_extension_are_rejected():
    with pytest.raises(BadSignature):
        verify_checkpoint(resign_field(signed(), 0, ORIGIN + "x"), LOG.node_id, ORIGIN)
    with pytest.raises(BadSignature):
        verify_checkpoint(signed().replace("\n\n", "\nextension\n\n"), LOG.node_id, ORIGIN)


def test_tampered_signature_is_rejected():
    _, [signature] = open_note(signed())
    raw = bytearray(signature.signature)
    raw[10] ^= 1
    forged = NoteSignature(signature.key_name, signature.key_id, bytes(raw))
    note = CP.body().decode() + "\n" + forged.line()
    with pytest.raises(BadSignature):
        verify_checkpoint(note, LOG.node_id, ORIGIN)
    truncated = NoteSignature(signature.key_name, signature.key_id, signature.signature[:63])
    with pytest.raises(BadSignature):
        verify_checkpoint(CP.body().decode() + "\n" + truncated.line(), LOG.node_id, ORIGIN)


def test_wrong_key_or_name_is_rejected():
    with pytest.raises(BadSignature):
        verify_checkpoint(signed(), STRANGER.node_id, ORIGIN)
    with pytest.raises(BadSignature):
        verify_checkpoint(signed(), LOG.node_id, "another-name")
    # A stranger who copies the log's name and key ID still cannot sign for it.
    fake = NoteSignature.sign(CP.body(), STRANGER, ORIGIN)
    fake = NoteSignature(ORIGIN, key_id(ORIGIN, LOG.public_key), fake.signature)
    with pytest.raises(BadSignature):
        verify_checkpoint(CP.body().decode() + "\n" + fake.line(), LOG.node_id, ORIGIN)


def test_a_bad_signature_by_the_key_spoils_a_good_one():
    good = signed()
    _, [signature] = open_note(good)
    bad = NoteSignature(signature.key_name, signature.key_id, bytes(64))
    with pytest.raises(BadSignature):
        verify_checkpoint(good + bad.line(), LOG.node_id, ORIGIN)


def test_unknown_signatures_are_ignored():
    unknown = [
        NoteSignature("someone.else", b"\x01\x02\x03\x04", bytes(64)).line(),
        NoteSignature(ORIGIN, b"\xff\xff\xff\xff", bytes(72)).line(),  # same name, other key
        NoteSignature("cosig", key_id(ORIGIN, LOG.public_key), bytes(72)).line(),  # same ID only
    ]
    note = signed() + "".join(unknown)
    assert verify_checkpoint(note, LOG.node_id, ORIGIN) == CP


def test_bad_key_names_are_refused_when_signing():
    for name in ["", "has space", "a+b", "tab\tname", "nbsp\u00a0name", "\udc80"]:
        with pytest.raises(ValueError):
            sign_checkpoint(CP, LOG, name)
        with pytest.raises(ValueError):
            verify_checkpoint(signed(), LOG.node_id, name)


# -- witness co-signing ---------------------------------------------------------------------------


def test_cosigned_note_verifies_for_each_signer():
    note = add_signature(add_signature(signed(), WITNESS_A, "witness-a"), WITNESS_B, "witness-b")
    assert verify_checkpoint(note, LOG.node_id, ORIGIN) == CP
    assert verify_checkpoint(note, WITNESS_A.node_id, "witness-a") == CP
    assert verify_checkpoint(note, WITNESS_B.node_id, "witness-b") == CP
    with pytest.raises(BadSignature):
        verify_checkpoint(note, STRANGER.node_id, "stranger")
    _, signatures = open_note(note)
    assert [s.key_name for s in signatures] == [ORIGIN, "witness-a", "witness-b"]
    assert note.startswith(signed())  # co-signing only appends


def test_cosigning_again_replaces_the_old_signature():
    once = add_signature(signed(), WITNESS_A, "witness-a")
    twice = add_signature(once, WITNESS_A, "witness-a")
    assert twice == once  # Ed25519 is deterministic, and the line is replaced, not repeated
    assert len(open_note(twice)[1]) == 2


def test_cosigning_does_not_hide_a_bad_log_signature():
    tampered = resign_field(signed(), 1, "99")
    cosigned = add_signature(tampered, WITNESS_A, "witness-a")
    assert verify_checkpoint(cosigned, WITNESS_A.node_id, "witness-a").size == 99
    with pytest.raises(BadSignature):
        verify_checkpoint(cosigned, LOG.node_id, ORIGIN)


def test_signature_limit():
    note = signed()
    for i in range(1, MAX_SIGNATURES):
        note = add_signature(note, Identity.from_seed(bytes([10 + i]) * 32), f"w{i}")
    assert len(open_note(note)[1]) == MAX_SIGNATURES
    assert verify_checkpoint(note, LOG.node_id, ORIGIN) == CP
    with pytest.raises(Malformed):
        add_signature(note, STRANGER, "one-too-many")
    extra = NoteSignature.sign(CP.body(), STRANGER, "one-too-many").line()
    with pytest.raises(Malformed):
        open_note(note + extra)


# -- fuzzing --------------------------------------------------------------------------------------

note_alphabet = st.sampled_from(
    list("\n\n\n \u2014+=/AQaz09o.-") + ["\u2014 ", "\n\n", "\r", "\x00", "\u00a0", "\udc80"]
)
notelike_text = st.one_of(
    st.text(max_size=300),
    st.lists(note_alphabet, max_size=80).map("".join),
    st.lists(note_alphabet, max_size=40).map(lambda parts: signed() + "".join(parts)),
)


@settings(max_examples=300, deadline=None)
@given(notelike_text)
def test_open_note_on_arbitrary_text_only_raises_malformed(text):
    try:
        open_note(text)
    except Malformed:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_open_note_on_arbitrary_bytes_only_raises_malformed(data):
    try:
        open_note(data)
    except Malformed:
        pass


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_notes_never_verify_as_something_else(data):
    note = add_signature(signed(), WITNESS_A, "witness-a")
    position = data.draw(st.integers(0, len(note) - 1), label="position")
    replacement = data.draw(st.text(max_size=3), label="replacement")
    mutated = note[:position] + replacement + note[position + 1 :]
    for node_id, name in [(LOG.node_id, ORIGIN), (WITNESS_A.node_id, "witness-a")]:
        try:
            checkpoint = verify_checkpoint(mutated, node_id, name)
        except (Malformed, BadSignature):
            continue
        assert checkpoint == CP  # only a change outside what this key signed can pass


line_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n", min_codepoint=0x20),
    min_size=1,
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(
    line_text,
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(line_text, max_size=3).map(tuple),
)
def test_round_trip_property(origin, size, root_hash, extensions):
    checkpoint = Checkpoint(origin, size, root_hash, extensions)
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    note = sign_checkpoint(checkpoint, LOG, "log")
    assert verify_checkpoint(note, LOG.node_id, "log") == checkpoint
