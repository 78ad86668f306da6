"""The session handshake: ``Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b`` with identity-bound payloads.

A sans-I/O core: :class:`Initiator` and :class:`Responder` take handshake messages in and give
handshake messages out; they never touch a socket, a clock or a global random source (the
ephemeral key, or the ``random_bytes`` function that makes it, is an argument).
docs/protocol.md ("Handshake") has the wire format and the security argument; in short::

    -> psk, e             msg1   48 bytes   PSK mixed in, initiator's ephemeral key (+ tag)
    <- e, ee, s, es       msg2  197 bytes   responder's static key and identity proof
    -> s, se              msg3  165 bytes   initiator's static key and identity proof

The federation key is the PSK and enters first (the ``psk0`` modifier, Noise §9), so the tag of
msg1 already proves it: a responder refuses a msg1 made without it before it makes a key pair,
computes a DH or signs anything, so a node outside the federation never sees its identity.

The Noise layer (:class:`CipherState`, :class:`SymmetricState`, :class:`HandshakeState`) follows
the Noise Protocol Framework, revision 34 (https://noiseprotocol.org/noise.html), sections 5 and
9, and is checked against published test vectors (cacophony's for XX, snow's for XXpsk0+psk3)
and, for XXpsk0 itself, against an independent implementation. Every primitive comes from
libsodium (``nacl.bindings``) or ``hashlib``/``hmac``; none is implemented here.

Identity binding, as in libp2p's Noise handshake: a node's Noise static key is the X25519 form of
its Ed25519 identity key, and the payload of msg2 (responder) and msg3 (initiator) is
``canonical([ed25519_public_key, signature])`` with ``signature`` the sender's
``Identity.sign(Purpose.HANDSHAKE, h || role)``. ``h`` is the Noise handshake hash just before the
payload is encrypted: it commits to the protocol name, the prologue, both ephemeral keys and every
token so far, so it is unique to the session. ``role`` is ``b"R"`` for the responder and ``b"I"``
for the initiator. The receiver checks that the Ed25519 key converts to the static key Noise just
authenticated and that the signature verifies, so a signature can be reused neither in another
session nor in the other role.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from ark_lattice import PROTOCOL_VERSION
from ark_lattice.encoding import Purpose, canonical, decode
from ark_lattice.errors import BadSignature, ErrorCode, LocalProtocolError, Malformed, RemoteProtocolError
from ark_lattice.identity import Identity, NodeId

__all__ = [
    "Initiator",
    "Responder",
    "HandshakeResult",
    "PROTOCOL_NAME",
    "PROLOGUE",
    "FEDERATION_KEY_SIZE",
    "MSG1_SIZE",
    "MSG2_SIZE",
    "MSG3_SIZE",
    "MAX_MESSAGE_SIZE",
    "ROLE_INITIATOR",
    "ROLE_RESPONDER",
    "HandshakePattern",
    "XX",
    "XXPSK0",
    "CipherState",
    "SymmetricState",
    "HandshakeState",
]

# -- Noise parameters (Noise rev 34 §12: 25519, ChaChaPoly, BLAKE2b) -------------------------------

DHLEN = 32  # §12.1: X25519 public keys and shared secrets are 32 bytes
HASHLEN = 64  # §12.5: BLAKE2b-512
KEYLEN = 32  # §5.2: cipher keys are 32 bytes; longer HKDF outputs are truncated
TAGLEN = 16  # §5.1: AEAD tag appended to every encryption under a key
PSKLEN = 32  # §9.1: a PSK is 32 bytes
_MAX_NONCE = 2**64 - 1  # §5.1: nonce 2^64-1 is reserved, never used to encrypt
_MAX_NOISE_MESSAGE = 65535  # §3: Noise messages are at most 65535 bytes

# -- ark-lattice handshake constants ---------------------------------------------------------------

PROTOCOL_NAME = b"Noise_XXpsk0_25519_ChaChaPoly_BLAKE2b"
PROLOGUE = b"ark-lattice/v%d" % PROTOCOL_VERSION
FEDERATION_KEY_SIZE = PSKLEN
ROLE_INITIATOR = b"I"
ROLE_RESPONDER = b"R"

# canonical([32-byte key, 64-byte signature]) is 0x82, 0x58 0x20 + key, 0x58 0x40 + signature.
_IDENTITY_PAYLOAD_SIZE = 1 + 2 + 32 + 2 + 64
MSG1_SIZE = DHLEN + TAGLEN  # e, then the empty payload's tag (the psk token keys the cipher)
MSG2_SIZE = DHLEN + (DHLEN + TAGLEN) + (_IDENTITY_PAYLOAD_SIZE + TAGLEN)  # e, enc(s), enc(payload)
MSG3_SIZE = (DHLEN + TAGLEN) + (_IDENTITY_PAYLOAD_SIZE + TAGLEN)  # enc(s), enc(payload)
#: The largest handshake message; a driver can refuse any bigger frame before calling ``receive``.
MAX_MESSAGE_SIZE = max(MSG1_SIZE, MSG2_SIZE, MSG3_SIZE)


@dataclass(frozen=True)
class HandshakeResult:
    """What a completed handshake yields: the authenticated peer and the two session keys.

    ``send_key`` encrypts what we send and ``recv_key`` what we receive (the two halves of Noise's
    Split, swapped on the responder); ``handshake_hash`` is the final Noise ``h``, a value unique to
    this session that later messages can sign to bind themselves to it (channel binding).
    """

    peer: NodeId
    send_key: bytes = field(repr=False)
    recv_key: bytes = field(repr=False)
    handshake_hash: bytes


class _Side:
    """What both ends of a handshake expose once it is done."""

    _result: HandshakeResult | None

    @property
    def complete(self) -> bool:
        return self._result is not None

    @property
    def result(self) -> HandshakeResult:
        if self._result is None:
            raise LocalProtocolError("the handshake is not complete")
        return self._result


class Initiator(_Side):
    """The dialling side: ``start()`` gives msg1, ``receive(msg2)`` gives msg3, then ``result``.

    ``ephemeral`` fixes the ephemeral X25519 private key (tests, vectors); otherwise it is drawn
    from ``random_bytes`` (default ``os.urandom``), which a deterministic simulator replaces with a
    seeded generator. ``expected_peer``, when the dialler knows whom it calls, makes the handshake
    fail before msg3 if the responder is anyone else, so our identity is never sent to an impostor.

    The PSK enters at msg1, so msg2 authenticates only if the responder holds the federation key:
    the initiator has key confirmation once ``receive(msg2)`` returns, and sends its identity (in
    msg3) only to a member of the federation.
    """

    def __init__(
        self,
        identity: Identity,
        federation_key: bytes,
        *,
        ephemeral: bytes | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
        expected_peer: NodeId | None = None,
    ) -> None:
        self._identity = identity
        self._expected_peer = expected_peer
        self._noise = _new_noise(identity, federation_key, True, ephemeral, random_bytes)
        self._state = "start"
        self._result: HandshakeResult | None = None

    def start(self) -> bytes:
        """Return msg1 (``-> psk, e``)."""
        self._expect("start")
        self._state = "failed"  # until proven otherwise
        message = self._noise.write_message(b"")
        self._state = "sent_msg1"
        return message

    def receive(self, message: bytes) -> bytes:
        """Process msg2 (``<- e, ee, s, es``) and return msg3 (``-> s, se``)."""
        self._expect("sent_msg1")
        self._state = "failed"
        _check_size(message, MSG2_SIZE, "msg2")
        payload, h = self._noise.read_message(message)
        peer = _verify_identity(payload, h, ROLE_RESPONDER, self._noise.remote_static)
        if self._expected_peer is not None and peer != self._expected_peer:
            expected = self._expected_peer.short
            raise RemoteProtocolError(
                ErrorCode.HANDSHAKE_FAILED, f"expected peer {expected}, reached {peer.short}"
            )
        reply = self._noise.write_message(
            lambda h: _identity_payload(self._identity, h, ROLE_INITIATOR)
        )
        self._result = _result(self._noise, peer, initiator=True)
        self._state = "done"
        return reply

    def _expect(self, state: str) -> None:
        if self._state != state:
            raise LocalProtocolError(f"initiator called out of order (state {self._state!r})")


class Responder(_Side):
    """The accepting side: ``receive(msg1)`` gives msg2, ``receive(msg3)`` None, then ``result``.

    Arguments are as for :class:`Initiator`. A msg1 made without our federation key fails its tag
    check in ``receive`` (``handshake_failed``) before we make a key pair, compute a DH or sign.
    """

    def __init__(
        self,
        identity: Identity,
        federation_key: bytes,
        *,
        ephemeral: bytes | None = None,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self._identity = identity
        self._noise = _new_noise(identity, federation_key, False, ephemeral, random_bytes)
        self._state = "wait_msg1"
        self._result: HandshakeResult | None = None

    def receive(self, message: bytes) -> bytes | None:
        """Process msg1 and return msg2; then process msg3 and return None (handshake done)."""
        if self._state == "wait_msg1":
            self._state = "failed"
            _check_size(message, MSG1_SIZE, "msg1")
            try:
                payload, _ = self._noise.read_message(message)
            except RemoteProtocolError as exc:
                if exc.code != ErrorCode.HANDSHAKE_FAILED:
                    raise
                # psk0 mixes the federation key in before msg1: a well-formed msg1 that does not
                # authenticate comes from a node of another federation (or is noise of that size).
                raise RemoteProtocolError(
                    ErrorCode.FOREIGN_FEDERATION, "the peer holds another federation key"
                ) from None
            if payload:  # cannot happen with the size check; keeps msg1's payload reserved-empty
                raise RemoteProtocolError(ErrorCode.MALFORMED, "msg1 carries a payload")
            reply = self._noise.write_message(
                lambda h: _identity_payload(self._identity, h, ROLE_RESPONDER)
            )
            self._state = "wait_msg3"
            return reply
        if self._state == "wait_msg3":
            self._state = "failed"
            _check_size(message, MSG3_SIZE, "msg3")
            payload, h = self._noise.read_message(message)
            peer = _verify_identity(payload, h, ROLE_INITIATOR, self._noise.remote_static)
            self._result = _result(self._noise, peer, initiator=False)
            self._state = "done"
            return None
        raise LocalProtocolError(f"responder called out of order (state {self._state!r})")


# -- the Noise Protocol Framework, revision 34 -----------------------------------------------------


@dataclass(frozen=True)
class HandshakePattern:
    """A Noise handshake pattern without pre-messages (§7): its name and each message's tokens."""

    name: str
    messages: tuple[tuple[str, ...], ...]

    @property
    def psk_mode(self) -> bool:
        return any("psk" in tokens for tokens in self.messages)


#: §7.5 interactive pattern XX.
XX = HandshakePattern("XX", (("e",), ("e", "ee", "s", "es"), ("s", "se")))
#: §9 XX with the psk0 modifier: the PSK is mixed in at the start of the first message.
XXPSK0 = HandshakePattern("XXpsk0", (("psk", "e"), ("e", "ee", "s", "es"), ("s", "se")))


class CipherState:
    """§5.1 CipherState with the ChaChaPoly cipher (§12.3): IETF ChaCha20-Poly1305."""

    __slots__ = ("_k", "_n")

    def __init__(self, key: bytes | None = None) -> None:
        self._k = key
        self._n = 0

    def has_key(self) -> bool:
        return self._k is not None

    @property
    def key(self) -> bytes | None:
        return self._k

    def set_nonce(self, nonce: int) -> None:
        self._n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._k is None:
            return plaintext
        if self._n >= _MAX_NONCE:
            raise LocalProtocolError("Noise cipher nonce exhausted")
        ciphertext = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, _chachapoly_nonce(self._n), self._k
        )
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._k is None:
            return ciphertext
        if self._n >= _MAX_NONCE:
            raise LocalProtocolError("Noise cipher nonce exhausted")
        try:
            plaintext = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, _chachapoly_nonce(self._n), self._k
            )
        except CryptoError:
            # §5.1: on failure the nonce is not incremented; the caller abandons the handshake.
            raise RemoteProtocolError(
                ErrorCode.HANDSHAKE_FAILED, "a handshake message did not authenticate"
            ) from None
        self._n += 1
        return plaintext


class SymmetricState:
    """§5.2 SymmetricState with the BLAKE2b hash (§12.8) and HKDF over HMAC-BLAKE2b (§4.3)."""

    __slots__ = ("_ck", "_h", "_cipher")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = _hash(protocol_name)
        self._ck = h
        self._h = h
        self._cipher = CipherState()

    @property
    def handshake_hash(self) -> bytes:
        return self._h

    @property
    def cipher(self) -> CipherState:
        return self._cipher

    def mix_key(self, ikm: bytes) -> None:
        self._ck, temp_k = _hkdf(self._ck, ikm, 2)
        self._cipher = CipherState(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self._h = _hash(self._h + data)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self._ck, temp_h, temp_k = _hkdf(self._ck, ikm, 3)
        self.mix_hash(temp_h)
        self._cipher = CipherState(temp_k[:KEYLEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = _hkdf(self._ck, b"", 2)
        return CipherState(temp_k1[:KEYLEN]), CipherState(temp_k2[:KEYLEN])


class HandshakeState:
    """§5.3 HandshakeState for patterns without pre-messages, with the §9 PSK rules.

    ``s`` and ``e`` are X25519 private keys; ``e`` may be fixed in advance (test vectors), else it
    is made from ``random_bytes`` when the ``e`` token is written. ``write_message`` takes the
    payload, or a function of the handshake hash at the payload (for payloads that sign it);
    ``read_message`` returns the payload and that same hash. Any failure leaves the state unusable.
    """

    def __init__(
        self,
        pattern: HandshakePattern,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: bytes | None = None,
        e: bytes | None = None,
        rs: bytes | None = None,
        psks: Sequence[bytes] = (),
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        for key in (s, e, rs):
            if key is not None and len(key) != DHLEN:
                raise LocalProtocolError("X25519 keys are 32 bytes")
        if any(len(psk) != PSKLEN for psk in psks):
            raise LocalProtocolError("a Noise PSK is 32 bytes")
        self._pattern = pattern
        self._initiator = initiator
        name = b"Noise_%s_25519_ChaChaPoly_BLAKE2b" % pattern.name.encode()
        self._symmetric = SymmetricState(name)
        self._symmetric.mix_hash(prologue)
        self._s = _keypair(s) if s is not None else None
        self._e = _keypair(e) if e is not None else None
        self._rs = rs
        self._re: bytes | None = None
        self._psks = list(psks)
        self._random_bytes = random_bytes
        self._index = 0  # the next message of the pattern
        self._failed = False

    @property
    def complete(self) -> bool:
        return self._index == len(self._pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        return self._symmetric.handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        return self._rs

    @property
    def remote_ephemeral(self) -> bytes | None:
        return self._re

    def write_message(self, payload: bytes | Callable[[bytes], bytes] = b"") -> bytes:
        self._check_turn(writing=True)
        self._failed = True
        sym = self._symmetric
        out = bytearray()
        for token in self._pattern.messages[self._index]:
            if token == "e":
                if self._e is None:
                    self._e = _keypair(self._random_bytes(DHLEN))
                out += self._e[1]
                sym.mix_hash(self._e[1])
                if self._pattern.psk_mode:
                    sym.mix_key(self._e[1])  # §9.2
            elif token == "s":
                if self._s is None:
                    raise LocalProtocolError("this pattern needs a static key")
                out += sym.encrypt_and_hash(self._s[1])
            elif token == "psk":
                sym.mix_key_and_hash(self._next_psk())
            else:
                sym.mix_key(self._dh_token(token))
        body = payload(sym.handshake_hash) if callable(payload) else payload
        out += sym.encrypt_and_hash(body)
        if len(out) > _MAX_NOISE_MESSAGE:
            raise LocalProtocolError("Noise message over 65535 bytes")
        self._index += 1
        self._failed = False
        return bytes(out)

    def read_message(self, message: bytes) -> tuple[bytes, bytes]:
        self._check_turn(writing=False)
        self._failed = True
        if len(message) > _MAX_NOISE_MESSAGE:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "Noise message over 65535 bytes")
        sym = self._symmetric
        view = memoryview(message)
        for token in self._pattern.messages[self._index]:
            if token == "e":
                self._re = _take(view, DHLEN)
                view = view[DHLEN:]
                sym.mix_hash(self._re)
                if self._pattern.psk_mode:
                    sym.mix_key(self._re)  # §9.2
            elif token == "s":
                size = DHLEN + TAGLEN if sym.cipher.has_key() else DHLEN
                self._rs = sym.decrypt_and_hash(_take(view, size))
                view = view[size:]
            elif token == "psk":
                sym.mix_key_and_hash(self._next_psk())
            else:
                sym.mix_key(self._dh_token(token))
        h = sym.handshake_hash
        if sym.cipher.has_key() and len(view) < TAGLEN:
            raise RemoteProtocolError(ErrorCode.MALFORMED, "handshake message too short for its tag")
        payload = sym.decrypt_and_hash(bytes(view))
        self._index += 1
        self._failed = False
        return payload, h

    def split(self) -> tuple[CipherState, CipherState]:
        """The transport ciphers: first initiator-to-responder, then responder-to-initiator."""
        if not self.complete or self._failed:
            raise LocalProtocolError("split before the handshake completed")
        return self._symmetric.split()

    # -- private ---------------------------------------------------------------------------------

    def _check_turn(self, *, writing: bool) -> None:
        if self._failed:
            raise LocalProtocolError("the handshake already failed")
        if self.complete:
            raise LocalProtocolError("the handshake is already complete")
        initiator_turn = self._index % 2 == 0
        if writing != (initiator_turn == self._initiator):
            raise LocalProtocolError("not our turn to " + ("write" if writing else "read"))

    def _next_psk(self) -> bytes:
        if not self._psks:
            raise LocalProtocolError("this pattern needs a PSK")
        return self._psks.pop(0)

    def _dh_token(self, token: str) -> bytes:
        # §7.3: the first letter names the initiator's key, the second the responder's.
        ours_first = self._initiator
        local_letter, remote_letter = (token[0], token[1]) if ours_first else (token[1], token[0])
        local = self._e if local_letter == "e" else self._s
        remote = self._re if remote_letter == "e" else self._rs
        if local is None or remote is None:
            raise LocalProtocolError(f"the {token} token needs a key this state lacks")
        return _dh(local[0], remote)


# -- private helpers -------------------------------------------------------------------------------


def _new_noise(
    identity: Identity,
    federation_key: bytes,
    initiator: bool,
    ephemeral: bytes | None,
    random_bytes: Callable[[int], bytes] | None,
) -> HandshakeState:
    if not isinstance(federation_key, bytes) or len(federation_key) != FEDERATION_KEY_SIZE:
        raise LocalProtocolError(f"the federation key must be {FEDERATION_KEY_SIZE} bytes")
    if ephemeral is not None and (not isinstance(ephemeral, bytes) or len(ephemeral) != DHLEN):
        raise LocalProtocolError(f"an ephemeral private key is {DHLEN} bytes")
    return HandshakeState(
        XXPSK0,
        initiator=initiator,
        prologue=PROLOGUE,
        s=identity.curve25519_private,
        e=ephemeral,
        psks=[federation_key],
        random_bytes=random_bytes or os.urandom,
    )


def _check_size(message: bytes, expected: int, what: str) -> None:
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise LocalProtocolError(f"{what} must be bytes")
    if len(message) != expected:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"{what} is {len(message)} bytes, expected {expected}"
        )


def _identity_payload(identity: Identity, h: bytes, role: bytes) -> bytes:
    signature = identity.sign(Purpose.HANDSHAKE, h + role)
    return canonical([identity.public_key, signature])


def _verify_identity(payload: bytes, h: bytes, role: bytes, remote_static: bytes | None) -> NodeId:
    """Check the identity payload against the Noise static key just learned; return the peer."""
    try:
        value = decode(payload, max_size=_IDENTITY_PAYLOAD_SIZE, what="handshake identity payload")
    except Malformed as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, str(exc)) from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], bytes)
        or len(value[0]) != 32
        or not isinstance(value[1], bytes)
        or len(value[1]) != 64
        or canonical(value) != payload
    ):
        raise RemoteProtocolError(ErrorCode.MALFORMED, "handshake identity payload is not [key, signature]")
    public_key, signature = value
    try:
        static_from_identity = sodium.crypto_sign_ed25519_pk_to_curve25519(public_key)
    except CryptoError:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "identity key is not an Ed25519 point") from None
    if remote_static is None or not hmac.compare_digest(static_from_identity, remote_static):
        raise RemoteProtocolError(
            ErrorCode.BAD_SIGNATURE, "identity key does not match the Noise static key"
        )
    peer = NodeId(public_key)
    try:
        peer.verify(Purpose.HANDSHAKE, h + role, signature)
    except BadSignature:
        raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, "bad handshake transcript signature") from None
    return peer


def _result(noise: HandshakeState, peer: NodeId, *, initiator: bool) -> HandshakeResult:
    to_responder, to_initiator = noise.split()
    k1, k2 = to_responder.key, to_initiator.key
    assert k1 is not None and k2 is not None
    send, recv = (k1, k2) if initiator else (k2, k1)
    return HandshakeResult(peer, send_key=send, recv_key=recv, handshake_hash=noise.handshake_hash)


def _keypair(private: bytes) -> tuple[bytes, bytes]:
    """§12.1 GENERATE_KEYPAIR from 32 private bytes (X25519 clamps them)."""
    return private, sodium.crypto_scalarmult_base(private)


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return sodium.crypto_scalarmult(private, public)
    except CryptoError:
        # libsodium refuses a low-order public key (all-zero result); §12.1 allows this rejection.
        raise RemoteProtocolError(ErrorCode.HANDSHAKE_FAILED, "peer sent a low-order X25519 key") from None


def _take(view: memoryview, size: int) -> bytes:
    if len(view) < size:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "handshake message too short")
    return bytes(view[:size])


def _chachapoly_nonce(n: int) -> bytes:
    # §12.3: 32 bits of zeros followed by the little-endian 64-bit counter.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2b).digest()


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """§4.3 HKDF with HMAC-BLAKE2b, returning 2 or 3 outputs of HASHLEN bytes."""
    temp_key = _hmac(chaining_key, ikm)
    out1 = _hmac(temp_key, b"\x01")
    out2 = _hmac(temp_key, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp_key, out2 + b"\x03")
