"""Invites and the join exchange, sans-I/O: every decision with `now` as an input."""

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.encoding import canonical
from ark_lattice.errors import RemoteProtocolError, UsageError
from ark_lattice.identity import Identity
from ark_lattice.protocol.invites import Host, Invite, InviteBook, Joiner, invite_psk
from ark_lattice.tiers import TrustTier

NOW = 1_800_000_000.0
KEY = bytes(range(32))
URL = "ws://127.0.0.1:7467"


def seeded(seed: int):
    rng = random.Random(seed)
    return rng.randbytes


def issue(book: InviteBook, inviter: Identity, **kw) -> Invite:
    args = {"now": NOW, "expires_in": 3600.0, "uses": 1, "tier": TrustTier.CORE, "random_bytes": seeded(1)}
    args.update(kw)
    return book.issue(inviter.node_id, [URL], **args)


def exchange(joiner: Joiner, host: Host, now: float = NOW):
    """Run the exchange to its end; returns the joiner's welcome (or raises the refusal)."""
    message: bytes | None = joiner.start()
    while message is not None:
        answer = host.receive(message, now)
        message = joiner.receive(answer)
        if host.done and message is not None:
            raise AssertionError("the host ended but the joiner wants to go on")
    return joiner.welcome


def test_the_invite_text_round_trips_and_never_holds_the_federation_key():
    inviter = Identity.generate()
    invite = issue(InviteBook(), inviter)
    text = invite.to_text()
    assert text.startswith("ARK-INVITE:") and len(text) < 400
    assert Invite.parse(text) == invite
    assert Invite.parse("  " + text.lower()[:50] + "\n" + text.lower()[50:]) == invite  # pasted, wrapped
    assert KEY.hex() not in text and KEY not in Invite.parse(text).to_text().encode()


@pytest.mark.parametrize("text", ["", "hello", "ARK-INVITE:", "ARK-INVITE:!!!!", "ARK-INVITE:AAAA"])
def test_a_damaged_invite_is_one_sentence(text):
    with pytest.raises(UsageError) as info:
        Invite.parse(text)
    assert "\n" not in str(info.value)


def test_a_join_hands_over_the_key_and_counts_the_use():
    inviter, newcomer = Identity.generate(), Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter)
    host = Host(inviter, book, KEY, "site-a")
    welcome = exchange(Joiner(newcomer, invite), host)
    assert welcome is not None and welcome.federation_key == KEY and welcome.name == "site-a"
    assert welcome.inviter == inviter.node_id and welcome.tier == "core"
    assert host.joined is not None and host.joined[0] == str(newcomer.node_id)
    (issued,) = list(book)
    assert issued.joined == [str(newcomer.node_id)] and issued.state(NOW) == "used"


def test_a_used_invite_is_refused_with_one_sentence():
    inviter = Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter)
    exchange(Joiner(Identity.generate(), invite), Host(inviter, book, KEY, "a"))
    with pytest.raises(RemoteProtocolError) as info:
        exchange(Joiner(Identity.generate(), invite), Host(inviter, book, KEY, "a"))
    assert info.value.reason == "the invite was already used; ask for a new one"


def test_an_invite_for_two_allows_two_joins_and_no_third():
    inviter = Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter, uses=2)
    for _ in range(2):
        assert exchange(Joiner(Identity.generate(), invite), Host(inviter, book, KEY, "a")) is not None
    with pytest.raises(RemoteProtocolError, match="already used"):
        exchange(Joiner(Identity.generate(), invite), Host(inviter, book, KEY, "a"))


def test_an_expired_invite_is_refused_by_the_joiner_and_by_the_inviter():
    inviter = Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter, expires_in=60.0)
    later = NOW + 61
    invite.check_fresh(later)  # the joiner leaves the verdict to the inviter's clock …
    with pytest.raises(UsageError, match="expired"):
        invite.check_fresh(later + 300)  # … unless the invite is well past its expiry
    with pytest.raises(RemoteProtocolError, match="the invite expired at .*Z; ask for a new one"):
        exchange(Joiner(Identity.generate(), invite), Host(inviter, book, KEY, "a"), now=later)
    assert list(book)[0].joined == []


def test_two_joins_racing_for_a_single_use_invite_let_one_in():
    # Both pass the check before the handshake; the use is counted when the secret is proven.
    inviter = Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter)
    first, second = Joiner(Identity.generate(), invite), Joiner(Identity.generate(), invite)
    h1, h2 = Host(inviter, book, KEY, "a"), Host(inviter, book, KEY, "a")
    m1, m2 = first.receive(h1.receive(first.start(), NOW)), second.receive(h2.receive(second.start(), NOW))
    assert m1 is not None and m2 is not None
    first.receive(h1.receive(m1, NOW))
    with pytest.raises(RemoteProtocolError, match="already used"):
        second.receive(h2.receive(m2, NOW))
    assert first.welcome is not None and second.welcome is None


def test_a_copied_invite_cannot_be_served_by_another_node():
    # Bound to the inviter's key: a node that sniffed the invite (and so knows the PSK) cannot
    # pose as the inviter; the joiner's handshake expects the inviter's static key.
    inviter, impostor = Identity.generate(), Identity.generate()
    real_book = InviteBook()
    invite = issue(real_book, inviter)
    stolen = InviteBook.from_json(real_book.to_json())  # every secret the inviter holds
    joiner = Joiner(Identity.generate(), invite)
    host = Host(impostor, stolen, b"\x01" * 32, "evil")
    with pytest.raises(RemoteProtocolError, match="expected peer"):
        joiner.receive(host.receive(joiner.start(), NOW))
    assert joiner.welcome is None


def test_a_join_without_the_secret_is_refused_and_uses_nothing():
    inviter = Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter)
    guess = Invite(invite.invite_id, b"\x00" * 32, invite.inviter, invite.endpoints, invite.expires_at)
    with pytest.raises(RemoteProtocolError, match="secret does not match"):
        exchange(Joiner(Identity.generate(), guess), Host(inviter, book, KEY, "a"))
    assert list(book)[0].uses_left == 1


def test_an_unknown_invite_and_garbage_are_refused():
    inviter = Identity.generate()
    book = InviteBook()
    other = issue(InviteBook(), inviter)  # made, but not in this book
    with pytest.raises(RemoteProtocolError, match="no such invite"):
        exchange(Joiner(Identity.generate(), other), Host(inviter, book, KEY, "a"))
    host = Host(inviter, book, KEY, "a")
    answer = host.receive(canonical(["join", 7, b"x", b""]), NOW)
    assert host.done and host.refused is not None and b"refused" in answer


def test_the_book_survives_a_round_trip_and_issuing_checks_its_input():
    inviter = Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter)
    again = InviteBook.from_json(book.to_json())
    assert [i.to_json() for i in again] == [i.to_json() for i in book]
    assert list(again)[0].psk == invite_psk(invite.secret) != invite.secret
    for bad in ({"expires_in": 0.0}, {"uses": 0}, {"tier": TrustTier.BLOCKED}):
        with pytest.raises(UsageError):
            issue(book, inviter, **bad)
    with pytest.raises(UsageError):
        book.issue(inviter.node_id, ["http://x:1"], now=NOW, expires_in=60, uses=1, tier=TrustTier.CORE)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=200).map(
    lambda raw: "ARK-INVITE:" + base64.b32encode(raw).decode().rstrip("="))))
def test_any_text_is_an_invite_or_one_sentence(text):
    try:
        Invite.parse(text)
    except UsageError as exc:
        assert "\n" not in str(exc) and str(exc)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_from_a_joiner_get_a_refusal_never_an_exception(data):
    inviter = Identity.generate()
    book = InviteBook()
    issue(book, inviter)
    host = Host(inviter, book, KEY, "a")
    answer = host.receive(data, NOW)
    assert host.done and host.refused is not None and b"refused" in answer
    assert list(book)[0].uses_left == 1


@settings(max_examples=50, deadline=None)
@given(msg1=st.one_of(st.binary(max_size=100), st.integers(), st.none()), step=st.binary(max_size=100))
def test_a_right_invite_id_with_a_wrong_handshake_is_refused_and_uses_nothing(msg1, step):
    inviter = Identity.generate()
    book = InviteBook()
    invite = issue(book, inviter)
    host = Host(inviter, book, KEY, "a")
    answer = host.receive(canonical(["join", 1, invite.invite_id, msg1]), NOW)
    if not host.done:  # a msg1 that authenticates cannot be guessed; but go on as if it had
        answer = host.receive(canonical(["msg3", step]), NOW)
    assert host.done and host.refused is not None and b"refused" in answer
    assert list(book)[0].uses_left == 1
