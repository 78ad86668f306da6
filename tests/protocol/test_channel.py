"""The encrypted channel: round trips, counter nonces, and refusal of replayed or altered frames."""

from __future__ import annotations

import random

import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.errors import LocalProtocolError, RemoteProtocolError
from ark_lattice.identity import Identity
from ark_lattice.protocol.channel import MAX_FRAME, MAX_PLAINTEXT, TAG_SIZE, SecureChannel
from ark_lattice.protocol.handshake import Initiator, Responder

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def pair() -> tuple[SecureChannel, SecureChannel]:
    return SecureChannel(KEY_A, KEY_B), SecureChannel(KEY_B, KEY_A)


def test_round_trip_both_ways() -> None:
    alice, bob = pair()
    for n in range(20):
        message = bytes([n]) * n
        assert bob.open(alice.seal(message)) == message
        assert alice.open(bob.seal(message + b"!")) == message + b"!"
    assert alice.frames_sent == bob.frames_received == 20
    assert len(alice.seal(b"")) == TAG_SIZE


def test_channel_from_a_real_handshake() -> None:
    alice, bob = Identity.from_seed(bytes(32)), Identity.from_seed(bytes([2]) * 32)
    federation = bytes(32)
    initiator = Initiator(alice, federation, random_bytes=random.Random(1).randbytes)
    responder = Responder(bob, federation, random_bytes=random.Random(2).randbytes)
    msg2 = responder.receive(initiator.start())
    assert msg2 is not None
    responder.receive(initiator.receive(msg2))
    a = SecureChannel.from_handshake(initiator.result)
    b = SecureChannel.from_handshake(responder.result)
    assert b.open(a.seal(b"manifest")) == b"manifest"
    assert a.open(b.seal(b"manifest too")) == b"manifest too"


def test_nonce_is_16_zero_bytes_then_big_endian_counter() -> None:
    alice, _ = pair()
    for counter in range(3):
        frame = alice.seal(b"x")
        nonce = bytes(16) + counter.to_bytes(8, "big")
        assert sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(frame, None, nonce, KEY_A) == b"x"


def _expect_decrypt_failure(channel: SecureChannel, frame: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        channel.open(frame)
    assert info.value.code == "decrypt_failed"
    assert channel.closed
    with pytest.raises(LocalProtocolError):  # closed for good
        channel.open(frame)


def test_replay_is_refused() -> None:
    alice, bob = pair()
    frame = alice.seal(b"once")
    assert bob.open(frame) == b"once"
    _expect_decrypt_failure(bob, frame)


def test_reorder_is_refused() -> None:
    alice, bob = pair()
    _, second = alice.seal(b"1"), alice.seal(b"2")
    _expect_decrypt_failure(bob, second)


def test_drop_is_refused_and_the_channel_stays_closed() -> None:
    alice, bob = pair()
    frames = [alice.seal(bytes([n])) for n in range(3)]
    assert bob.open(frames[0]) == b"\x00"
    _expect_decrypt_failure(bob, frames[2])  # frames[1] was dropped
    with pytest.raises(LocalProtocolError):
        bob.open(frames[1])  # even the right frame, once the channel failed


def test_reflection_is_refused() -> None:
    alice, _ = pair()
    _expect_decrypt_failure(alice, alice.seal(b"echo"))


def test_frame_from_another_session_is_refused() -> None:
    alice, _ = pair()
    other = SecureChannel(KEY_B, bytes(range(100, 132)))  # same position, another key
    _expect_decrypt_failure(other, alice.seal(b"elsewhere"))


def test_tampering_any_byte_is_refused() -> None:
    alice, _ = pair()
    frame = alice.seal(b"the quick brown fox")
    for index in range(len(frame)):
        forged = bytearray(frame)
        forged[index] ^= 0x80
        _expect_decrypt_failure(SecureChannel(KEY_B, KEY_A), bytes(forged))
    for cut in (frame[:-1], frame + b"\x00", frame[1:]):
        _expect_decrypt_failure(SecureChannel(KEY_B, KEY_A), cut)


def test_size_limits() -> None:
    alice, bob = pair()
    big = bytes(MAX_PLAINTEXT)
    frame = alice.seal(big)
    assert len(frame) == MAX_FRAME
    assert bob.open(frame) == big
    with pytest.raises(LocalProtocolError):
        alice.seal(bytes(MAX_PLAINTEXT + 1))
    assert not alice.closed  # refusing to seal is not a broken channel

    with pytest.raises(RemoteProtocolError) as info:
        bob.open(bytes(MAX_FRAME + 1))
    assert info.value.code == "too_large" and bob.closed

    _, carol = pair()
    with pytest.raises(RemoteProtocolError) as info:
        carol.open(bytes(TAG_SIZE - 1))
    assert info.value.code == "malformed" and carol.closed


def test_counter_exhaustion_is_a_local_error() -> None:
    alice, bob = pair()
    alice._send_counter = bob._recv_counter = 2**64 - 1
    assert bob.open(alice.seal(b"last")) == b"last"
    with pytest.raises(LocalProtocolError):
        alice.seal(b"one too many")


def test_bad_keys() -> None:
    with pytest.raises(LocalProtocolError):
        SecureChannel(KEY_A, KEY_A)
    with pytest.raises(LocalProtocolError):
        SecureChannel(KEY_A[:16], KEY_B)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_open_only_raises_remote_errors(frame: bytes) -> None:
    _, bob = pair()
    with pytest.raises(RemoteProtocolError):
        bob.open(frame)
    assert bob.closed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=10), st.data())
def test_fuzz_only_the_sent_order_opens(messages: list[bytes], data: st.DataObject) -> None:
    alice, bob = pair()
    frames = [alice.seal(m) for m in messages]
    order = data.draw(st.permutations(range(len(frames))))
    delivered: list[bytes] = []
    for position, index in enumerate(order):
        if index != position:
            with pytest.raises(RemoteProtocolError):
                bob.open(frames[index])
            break
        delivered.append(bob.open(frames[index]))
    assert delivered == messages[: len(delivered)]
