"""The encrypted channel after the handshake: XChaCha20-Poly1305 frames, counter nonces (DESIGN §6).

Each direction has its own key (from the handshake's Split) and its own 64-bit frame counter. The
24-byte nonce of frame ``n`` is 16 zero bytes followed by ``n`` as 8 big-endian bytes; the counter
is never sent, both sides keep it in step. So a replayed, reordered, dropped, truncated or altered
frame is decrypted under the wrong nonce or fails its tag, and either way fails authentication.
After the first failure the channel is closed for good: the two counters can no longer be trusted
to agree, and a peer that sends a bad frame has nothing more to say.

A fresh key per session and direction makes counter nonces safe (a nonce is never reused under a
key); XChaCha20's 24-byte nonce leaves room that a random-nonce scheme would need, but here it is
just the AEAD DESIGN §6 names. The whole frame is the AEAD output; the transport (a WebSocket
binary message) gives its length.
"""

from __future__ import annotations

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

from ark_lattice.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ark_lattice.protocol.handshake import HandshakeResult

__all__ = ["SecureChannel", "KEY_SIZE", "TAG_SIZE", "MAX_PLAINTEXT", "MAX_FRAME"]

KEY_SIZE = 32  # XChaCha20-Poly1305 key (RFC draft-irtf-cfrg-xchacha §2)
TAG_SIZE = 16  # Poly1305 tag (RFC 8439 §2.5)
#: Largest plaintext one frame may carry: room for a 2 MiB transfer batch plus its framing.
MAX_PLAINTEXT = 2 * 1024 * 1024
#: Largest frame on the wire: the plaintext limit plus the tag. Anything bigger is refused unread.
MAX_FRAME = MAX_PLAINTEXT + TAG_SIZE

_COUNTER_LIMIT = 2**64  # the counter is 8 bytes in the nonce; it must never wrap
_NONCE_PREFIX = bytes(16)


class SecureChannel:
    """Seal and open the frames of one session; not thread-safe, one instance per connection."""

    __slots__ = ("_send_key", "_recv_key", "_send_counter", "_recv_counter", "_closed")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        for key in (send_key, recv_key):
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                raise LocalProtocolError(f"channel keys are {KEY_SIZE} bytes")
        if send_key == recv_key:
            # Equal keys would let an attacker reflect our own frames back to us.
            raise LocalProtocolError("the send and receive keys must differ")
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_counter = 0
        self._recv_counter = 0
        self._closed = False

    @classmethod
    def from_handshake(cls, result: HandshakeResult) -> SecureChannel:
        return cls(result.send_key, result.recv_key)

    @property
    def closed(self) -> bool:
        """True once a frame failed to open; the channel then refuses every further frame."""
        return self._closed

    @property
    def frames_sent(self) -> int:
        return self._send_counter

    @property
    def frames_received(self) -> int:
        return self._recv_counter

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt the next outgoing frame."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(
                f"frame plaintext is {len(plaintext)} bytes, over the limit of {MAX_PLAINTEXT}"
            )
        if self._send_counter >= _COUNTER_LIMIT:
            raise LocalProtocolError("send counter exhausted: this session must end")
        frame = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            bytes(plaintext), None, _nonce(self._send_counter), self._send_key
        )
        self._send_counter += 1
        return frame

    def open(self, frame: bytes) -> bytes:
        """Decrypt the next incoming frame; any failure closes the channel."""
        if self._closed:
            raise LocalProtocolError("the channel is closed after a failed frame")
        if len(frame) > MAX_FRAME:
            self._closed = True
            raise RemoteProtocolError(
                ErrorCode.TOO_LARGE, f"frame is {len(frame)} bytes, over the limit of {MAX_FRAME}"
            )
        if len(frame) < TAG_SIZE:
            self._closed = True
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"frame is {len(frame)} bytes, shorter than a tag"
            )
        if self._recv_counter >= _COUNTER_LIMIT:
            self._closed = True
            raise LocalProtocolError("receive counter exhausted: this session must end")
        try:
            plaintext = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                bytes(frame), None, _nonce(self._recv_counter), self._recv_key
            )
        except CryptoError:
            self._closed = True
            raise RemoteProtocolError(
                ErrorCode.DECRYPT_FAILED, f"frame {self._recv_counter} did not authenticate"
            ) from None
        self._recv_counter += 1
        return plaintext


def _nonce(counter: int) -> bytes:
    return _NONCE_PREFIX + counter.to_bytes(8, "big")
