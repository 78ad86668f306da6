"""Node identity: an Ed25519 key pair whose public key *is* the node ID (self-certifying).

The node ID is the lower-case RFC 4648 base32 of the 32-byte public key without padding (52
characters); anyone holding an ID can check a signature without asking anyone else. It is shown
grouped in fours for reading aloud, and by its first 8 characters where space is short.

The key file holds the 32-byte seed, either in the clear (file mode 0600) or sealed with a passphrase:
argon2id (libsodium's ``crypto_pwhash``) derives a key that opens a ``secretbox`` around the seed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.signing
import nacl.utils

from ark_lattice.encoding import signing_input
from ark_lattice.errors import BadPassphrase, BadSignature, IdentityError, Malformed, NotInitialised
from ark_lattice.privatefile import write_private

__all__ = ["NodeId", "Identity", "verify_signature", "KEY_FILE_FORMAT"]

KEY_FILE_FORMAT = "ark-lattice-key/1"
_SHORT_LEN = 8


@dataclass(frozen=True, order=True)
class NodeId:
    """A node's identity: its Ed25519 public key, shown as base32."""

    key: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != 32:
            raise Malformed("a node ID is a 32-byte Ed25519 public key")

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parse the full form, grouped or not; case and dashes are ignored."""
        cleaned = text.strip().replace("-", "").upper()
        if len(cleaned) != 52:
            raise Malformed(f"{text!r} is not a node ID (52 base32 characters)")
        try:
            return cls(base64.b32decode(cleaned + "====", casefold=False))
        except binascii.Error:
            raise Malformed(f"{text!r} is not a node ID (not base32)") from None

    def __str__(self) -> str:
        return self._text

    @functools.cached_property
    def _text(self) -> str:  # cached: ids are printed into every stored row and log line
        return base64.b32encode(self.key).decode().rstrip("=").lower()

    @property
    def short(self) -> str:
        return str(self)[:_SHORT_LEN]

    @property
    def grouped(self) -> str:
        s = str(self)
        return "-".join(s[i : i + 4] for i in range(0, len(s), 4))

    def verify(self, purpose: str, payload: bytes, signature: bytes) -> None:
        verify_signature(self.key, purpose, payload, signature)

    def verify_note(self, text: bytes, signature: bytes) -> None:
        """Verify a C2SP signed-note signature (over the note text itself, see Identity.sign_note)."""
        try:
            nacl.signing.VerifyKey(self.key).verify(text, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError, ValueError):
            raise BadSignature("bad note signature") from None


def verify_signature(public_key: bytes, purpose: str, payload: bytes, signature: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is the key's signature for ``purpose``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(signing_input(purpose, payload), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError, ValueError):
        raise BadSignature(f"bad {purpose} signature") from None


class Identity:
    """The local node's signing key and its node ID."""

    __slots__ = ("_signing_key", "node_id")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self.node_id = NodeId(bytes(signing_key.verify_key))

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(nacl.signing.SigningKey(seed))

    def sign(self, purpose: str, payload: bytes) -> bytes:
        return self._signing_key.sign(signing_input(purpose, payload)).signature

    def sign_note(self, text: bytes) -> bytes:
        """Sign a C2SP signed-note text as it is, for interoperability with note verifiers.

        The one exception to the domain prefix: note text is UTF-8 without control characters
        while every :func:`signing_input` holds a NUL byte, so the two can never collide.
        """
        return self._signing_key.sign(text).signature

    @property
    def curve25519_private(self) -> bytes:
        """The X25519 form of this key, for the handshake's static key (DESIGN §6)."""
        return self._signing_key.to_curve25519_private_key().encode()

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    @property
    def public_key(self) -> bytes:
        return self.node_id.key

    # -- key file ---------------------------------------------------------------------------

    def save(self, path: Path, passphrase: str | None = None) -> None:
        """Write the key file with mode 0600, refusing to overwrite an existing one."""
        if passphrase is None:
            doc = {"format": KEY_FILE_FORMAT, "sealed": False, "seed": _b64(self.seed)}
        else:
            # MODERATE limits (256 MiB, 3 passes): a USB stick can be lost, so the sealed key must
            # resist offline guessing; the cost is about a second at each start.
            ops = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
            mem = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
            salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
            key = nacl.pwhash.argon2id.kdf(
                nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=ops, memlimit=mem
            )
            box = nacl.secret.SecretBox(key).encrypt(self.seed)
            doc = {
                "format": KEY_FILE_FORMAT,
                "sealed": True,
                "kdf": "argon2id",
                "opslimit": ops,
                "memlimit": mem,
                "salt": _b64(salt),
                "box": _b64(bytes(box)),
            }
        # A sealed key is encrypted: it may live where modes are not kept (a FAT stick).
        write_private(path, (json.dumps(doc, indent=2) + "\n").encode(), secret=passphrase is None)

    @staticmethod
    def is_sealed(path: Path) -> bool:
        return bool(_read_key_doc(path).get("sealed"))

    @classmethod
    def load(cls, path: Path, passphrase: str | None = None) -> Identity:
        doc = _read_key_doc(path)
        try:
            if not doc.get("sealed"):
                return cls.from_seed(_unb64(doc["seed"]))
            if passphrase is None:
                raise BadPassphrase(
                    "the node key is sealed: give its passphrase with --passphrase-file, "
                    "ARK_LATTICE_PASSPHRASE or at the prompt"
                )
            key = nacl.pwhash.argon2id.kdf(
                nacl.secret.SecretBox.KEY_SIZE,
                passphrase.encode(),
                _unb64(doc["salt"]),
                opslimit=int(doc["opslimit"]),
                memlimit=int(doc["memlimit"]),
            )
            seed = nacl.secret.SecretBox(key).decrypt(_unb64(doc["box"]))
        except nacl.exceptions.CryptoError:
            raise BadPassphrase("wrong passphrase for the node key") from None
        except (KeyError, ValueError, TypeError, binascii.Error):
            raise IdentityError(f"the key file {path} is damaged") from None
        return cls.from_seed(seed)


def _read_key_doc(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotInitialised(f"no node identity in {path.parent}; run `ark-lattice init`") from None
    except (OSError, ValueError) as exc:
        raise IdentityError(f"cannot read the key file {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        raise IdentityError(f"{path} is not an ark-lattice key file")
    return doc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
