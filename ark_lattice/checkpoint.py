"""Signed ledger checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes, Ed25519 keys.

A checkpoint (https://c2sp.org/tlog-checkpoint) commits to a log's Merkle tree head (RFC 6962, see
:mod:`ark_lattice.merkle`) in three lines, with optional extension lines after them::

    <origin>
    <tree size in decimal, no leading zeroes>
    <base64 of the 32-byte root hash>

It travels as a signed note (https://c2sp.org/signed-note): the text, a blank line, then one
line per signature, ``"— <key name> <base64(key ID || signature)>"`` (U+2014 em dash). Ed25519
signs the note text itself, final newline included, and the 4-byte key ID is
``SHA-256(key name || 0x0A || 0x01 || public key)[:4]`` (signature type 0x01). Witnesses co-sign by
appending their own line (:func:`add_signature`), and a verifier ignores signatures from keys it
does not know, so the same text can carry the log's signature and several witnesses'.

The notes are byte-compatible with golang.org/x/mod/sumdb/note and transparency-dev tooling.
Parsing untrusted text raises only :class:`~ark_lattice.errors.Malformed`, and verifying it only
that or :class:`~ark_lattice.errors.BadSignature`; a bad key name from our own caller is a
:class:`ValueError`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ark_lattice.encoding import sha256
from ark_lattice.errors import BadSignature, Malformed
from ark_lattice.identity import Identity, NodeId

__all__ = [
    "Checkpoint",
    "NoteSignature",
    "sign_checkpoint",
    "add_signature",
    "open_note",
    "verify_checkpoint",
    "key_id",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "ROOT_HASH_SIZE",
    "SIGNATURE_TYPE_ED25519",
]

# c2sp.org/signed-note: verifiers SHOULD bound a note and MUST accept at least 16 signatures. An
# Ed25519 line is about 110 bytes, so 16 of them and a checkpoint body fit in 8 KiB with room.
MAX_NOTE_SIZE = 8 * 1024
MAX_SIGNATURES = 16
SIGNATURE_TYPE_ED25519 = 0x01  # c2sp.org/signed-note, "Signature types"
ROOT_HASH_SIZE = 32  # SHA-256, RFC 6962
MAX_TREE_SIZE = (1 << 64) - 1

_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_KEY_ID_SIZE = 4
_ED25519_SIGNATURE_SIZE = 64
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # signed-note: no ASCII control but newline
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # tlog-checkpoint: no leading zeroes


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: ``size`` leaves hashing to ``root_hash``, for the log named ``origin``."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()  # opaque extra lines; tlog-checkpoint advises against them

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise Malformed("checkpoint tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise Malformed("checkpoint tree size must be in [0, 2**64)")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != ROOT_HASH_SIZE:
            raise Malformed(f"checkpoint root hash must be {ROOT_HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise Malformed("checkpoint extensions must be a tuple of lines")
        for line in self.extensions:
            _check_line(line, "checkpoint extension line")
        if len(self.body()) > MAX_NOTE_SIZE:
            raise Malformed(f"checkpoint is over the note limit of {MAX_NOTE_SIZE} bytes")

    def body(self) -> bytes:
        """The note text: the bytes every signature covers."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii")]
        lines.extend(self.extensions)
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Parse a note text (without its signatures); only the canonical form is accepted."""
        text = _decode(text, "checkpoint")
        if not text.endswith("\n"):
            raise Malformed("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise Malformed("checkpoint needs origin, tree size and root hash lines")
        origin, size_line, root_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line):
            raise Malformed("checkpoint tree size is not a decimal number without leading zeroes")
        root_hash = _b64decode(root_line, "checkpoint root hash")
        return cls(origin, int(size_line), root_hash, tuple(extensions))


@dataclass(frozen=True)
class NoteSignature:
    """One signature line of a signed note; ``signature`` is what follows the 4-byte key ID."""

    key_name: str
    key_id: bytes
    signature: bytes

    @classmethod
    def sign(cls, text: bytes, identity: Identity, key_name: str) -> NoteSignature:
        """Sign note ``text`` with ``identity`` under ``key_name`` (Ed25519, type 0x01)."""
        _require_key_name(key_name)
        return cls(key_name, key_id(key_name, identity.public_key), identity.sign_note(text))

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """Parse one signature line, without its newline."""
        if not line.startswith(_SIGNATURE_PREFIX):
            raise Malformed("a note signature line must start with an em dash and a space")
        name, sep, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
        if not sep or not _valid_key_name(name):
            raise Malformed("a note signature line needs a key name without spaces or '+'")
        raw = _b64decode(encoded, "note signature")
        if len(raw) <= _KEY_ID_SIZE:
            raise Malformed("a note signature is a key ID followed by a signature")
        return cls(name, raw[:_KEY_ID_SIZE], raw[_KEY_ID_SIZE:])

    def line(self) -> str:
        """The signature line, newline included."""
        encoded = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{_SIGNATURE_PREFIX}{self.key_name} {encoded}\n"

    def is_by(self, node_id: NodeId, key_name: str) -> bool:
        """Whether this line names the Ed25519 key ``node_id`` under ``key_name``."""
        return self.key_name == key_name and self.key_id == key_id(key_name, node_id.key)

    def verify(self, text: bytes, node_id: NodeId) -> None:
        """Raise :class:`BadSignature` unless this is ``node_id``'s signature on ``text``."""
        if len(self.signature) != _ED25519_SIGNATURE_SIZE:
            raise BadSignature(f"note signature by {self.key_name} is not an Ed25519 signature")
        try:
            node_id.verify_note(text, self.signature)
        except BadSignature:
            raise BadSignature(f"bad note signature by {self.key_name}") from None


def key_id(key_name: str, public_key: bytes) -> bytes:
    """The signed-note key ID of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return sha256(key_name.encode("utf-8"), b"\n", bytes([SIGNATURE_TYPE_ED25519]), public_key)[
        :_KEY_ID_SIZE
    ]


def sign_checkpoint(checkpoint: Checkpoint, identity: Identity, key_name: str) -> str:
    """The signed note text of ``checkpoint``, signed by ``identity`` as ``key_name``.

    tlog-checkpoint recommends that a log's key name be its origin.
    """
    return _assemble(checkpoint, [NoteSignature.sign(checkpoint.body(), identity, key_name)])


def add_signature(note_text: str | bytes, identity: Identity, key_name: str) -> str:
    """Co-sign a signed checkpoint: ``note_text`` with ``identity``'s signature line appended.

    An older signature by the same key is replaced, as sumdb/note does. This does not check the
    signatures already present: a witness verifies the log's with :func:`verify_checkpoint` (and
    consistency with what it saw before) before it adds its own.
    """
    checkpoint, signatures = open_note(note_text)
    new = NoteSignature.sign(checkpoint.body(), identity, key_name)
    kept = [s for s in signatures if (s.key_name, s.key_id) != (new.key_name, new.key_id)]
    if len(kept) >= MAX_SIGNATURES:
        raise Malformed(f"the checkpoint already carries {MAX_SIGNATURES} signatures")
    return _assemble(checkpoint, [*kept, new])


def open_note(text: str | bytes) -> tuple[Checkpoint, list[NoteSignature]]:
    """Parse a signed checkpoint note, checking its syntax but none of its signatures.

    Untrusted input: anything wrong with it raises :class:`Malformed`, and nothing else.
    """
    note = _decode(text, "signed note")
    # The text ends at the *last* blank line; it may itself hold blank lines (c2sp signed-note),
    # though a checkpoint's does not.
    split = note.rfind("\n\n")
    if split < 0:
        raise Malformed("a signed note needs a blank line before its signatures")
    body, signature_block = note[: split + 1], note[split + 2 :]
    if not signature_block.endswith("\n"):
        raise Malformed("a signed note needs signature lines ending with a newline")
    lines = signature_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise Malformed(f"a signed note carries at most {MAX_SIGNATURES} signatures")
    signatures = [NoteSignature.parse_line(line) for line in lines]
    return Checkpoint.parse(body), signatures


def verify_checkpoint(text: str | bytes, node_id: NodeId, key_name: str) -> Checkpoint:
    """The checkpoint in ``text`` if the key ``node_id``, named ``key_name``, signed it.

    Signatures by other keys are ignored (c2sp signed-note); every one by this key must verify.
    Raises :class:`Malformed` for a note that does not parse and :class:`BadSignature` when this
    key's signature is missing or wrong.
    """
    _require_key_name(key_name)
    checkpoint, signatures = open_note(text)
    mine = [s for s in signatures if s.is_by(node_id, key_name)]
    if not mine:
        raise BadSignature(f"the checkpoint carries no signature by {key_name}")
    body = checkpoint.body()
    for signature in mine:
        signature.verify(body, node_id)
    return checkpoint


def _assemble(checkpoint: Checkpoint, signatures: list[NoteSignature]) -> str:
    note = checkpoint.body().decode("utf-8") + "\n" + "".join(s.line() for s in signatures)
    if len(note.encode("utf-8")) > MAX_NOTE_SIZE:
        raise Malformed(f"the signed checkpoint would be over {MAX_NOTE_SIZE} bytes")
    return note


def _decode(text: object, what: str) -> str:
    """Untrusted note text as ``str``: bounded, valid UTF-8, no control characters but newline."""
    if isinstance(text, bytes):
        if len(text) > MAX_NOTE_SIZE:
            raise Malformed(f"{what} is over the limit of {MAX_NOTE_SIZE} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(f"{what} is not valid UTF-8") from None
    elif isinstance(text, str):
        # Cheap bound first: a string has at most as many characters as its UTF-8 has bytes.
        if len(text) > MAX_NOTE_SIZE:
            raise Malformed(f"{what} is over the limit of {MAX_NOTE_SIZE} bytes")
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise Malformed(f"{what} is not valid Unicode") from None
        if size > MAX_NOTE_SIZE:
            raise Malformed(f"{what} is over the limit of {MAX_NOTE_SIZE} bytes")
    else:
        raise Malformed(f"{what} must be text")
    if _CONTROL.search(text):
        raise Malformed(f"{what} holds a control character")
    return text


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): padded, and only the one canonical spelling."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII input
        raise Malformed(f"{what} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise Malformed(f"{what} is not canonical base64")
    return raw


def _check_line(line: object, what: str) -> None:
    if not isinstance(line, str) or not line:
        raise Malformed(f"{what} must be a non-empty string")
    if "\n" in line or _CONTROL.search(line):
        raise Malformed(f"{what} must be one line without control characters")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed(f"{what} is not valid Unicode") from None


def _valid_key_name(name: str) -> bool:
    # c2sp signed-note: non-empty, no Unicode spaces, no '+' (the verifier key separator).
    return bool(name) and not any(c.isspace() or c == "+" for c in name)


def _require_key_name(key_name: object) -> None:
    if not isinstance(key_name, str) or not _valid_key_name(key_name):
        raise ValueError(f"{key_name!r} is not a note key name (non-empty, no spaces or '+')")
    if _CONTROL.search(key_name):
        raise ValueError(f"{key_name!r} is not a note key name (control character)")
    try:
        key_name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{key_name!r} is not a note key name (not valid Unicode)") from None
