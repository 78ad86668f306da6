"""The federation key file: 32 raw bytes with mode 0600 — or, where the file system keeps no modes
(a FAT/exFAT stick) and the node's own key is sealed, sealed to the node's key.

Sealing it to the identity, not to the passphrase, costs no second argon2id at start: whoever has
unsealed ``identity.key`` opens it with a key derived from the identity seed (BLAKE2b, its own
personalisation), and a lost stick gives up neither key without the passphrase. Such a file is
useful only to its node: to let another node join, copy the key from a node whose home keeps modes.
"""

from __future__ import annotations

from pathlib import Path

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret

from ark_lattice.errors import ConfigError, IdentityError, NotInitialised
from ark_lattice.identity import Identity
from ark_lattice.privatefile import PermissionsNotKept, write_private

__all__ = ["FEDERATION_KEY_SIZE", "SEALED_MAGIC", "write_federation_key", "read_federation_key"]

FEDERATION_KEY_SIZE = 32
SEALED_MAGIC = b"ark-lattice-federation-key-sealed/1\n"


def _box(identity: Identity) -> nacl.secret.SecretBox:
    key = nacl.hash.blake2b(
        identity.seed, digest_size=nacl.secret.SecretBox.KEY_SIZE, person=b"ark-fed-key-box",
        encoder=nacl.encoding.RawEncoder,
    )
    return nacl.secret.SecretBox(key)


def write_federation_key(path: Path, key: bytes, identity: Identity, *, identity_sealed: bool) -> None:
    """Write the key in the clear (0600); sealed to ``identity`` only where modes are not kept and
    the identity itself is sealed — otherwise such a file system is refused (PermissionsNotKept)."""
    try:
        write_private(path, key)
    except PermissionsNotKept:
        if not identity_sealed:
            raise
        write_private(path, SEALED_MAGIC + bytes(_box(identity).encrypt(key)), secret=False)


def is_sealed(data: bytes) -> bool:
    return data.startswith(SEALED_MAGIC)


def read_federation_key(path: Path, identity: Identity | None) -> bytes:
    """The 32-byte key; a sealed file needs the unlocked ``identity``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotInitialised(f"no federation key in {path.parent}") from None
    if is_sealed(data):
        if identity is None:
            raise IdentityError(f"{path} is sealed to the node's key: unlock the node to read it")
        try:
            data = _box(identity).decrypt(data[len(SEALED_MAGIC):])
        except nacl.exceptions.CryptoError:
            raise ConfigError(f"{path} does not open with this node's key") from None
    if len(data) != FEDERATION_KEY_SIZE:
        raise ConfigError(f"{path} is not a 32-byte federation key")
    return data
