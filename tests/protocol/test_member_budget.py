"""A member's budget (protocol/budget.py): hostile frames and reconciliation messages are refused
before the work they would cost, with an error frame and a strike, and the session goes on."""

from __future__ import annotations

import re
import struct
from typing import Any

import cbor2
import pytest

from ark_lattice.errors import ErrorCode, PolicyError
from ark_lattice.policy.engine import DEFAULT_POLICY_TEXT, Policy
from ark_lattice.policy.gate import PolicyGate
from ark_lattice.protocol import frames as f
from ark_lattice.protocol.budget import DEFAULT_BUDGET, CostMeter, MemberBudget
from ark_lattice.protocol.events import Misbehaviour, PeerReportedError
from ark_lattice.protocol.reconcile import ItemSet, Responder
from ark_lattice.protocol.session import Session, State

from test_session import ALICE, BOB, CORE, SANDBOX, make_packet, open_pair


def packets_of_empty_arrays(n: int) -> bytes:
    """A packets frame whose list holds ``n`` empty arrays (2 MiB for two million)."""
    return b"\x84\x01\x67packets\x9a" + struct.pack(">I", n) + b"\x80" * n + b"\xf4\xf5"


HOSTILE_FRAMES = {
    "two million empty arrays": (packets_of_empty_arrays(2_000_000), "over_budget"),
    "nested 10,000 deep": (b"\x83\x01\x65offer" + b"\x81" * 10_000 + b"\x80", "over_budget"),
    "an id list count past the end": (b"\x83\x01\x65offer\x9b" + (2**64 - 1).to_bytes(8, "big"), "malformed"),
    "a byte string longer than the frame": (b"\x83\x01\x65recon\x00\x5a\x7f\xff\xff\xff", "malformed"),
    "an indefinite-length list": (b"\x83\x01\x65offer\x9f" + b"\x40" * 100 + b"\xff", "malformed"),
    "a tag": (b"\x83\x01\x64ping\xc2\x41\x01", "malformed"),
    "65,536 empty ids": (b"\x83\x01\x65offer\x99\xff\xff" + b"\x40" * 0xFFFF, "over_budget"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FRAMES))
def test_a_member_sending_a_hostile_frame_gets_an_error_frame_and_a_strike_before_decoding(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plaintext, code = HOSTILE_FRAMES[name]
    pair = open_pair(CORE, SANDBOX)  # b holds a as sandbox: a member, not a trusted one
    decoded: list[bytes] = []
    real_loads = cbor2.loads

    def recording_loads(data: Any, **kw: Any) -> Any:
        decoded.append(bytes(data))
        return real_loads(data, **kw)

    monkeypatch.setattr(cbor2, "loads", recording_loads)
    strikes = pair.b.session.strikes
    pair.a.inject_plaintext(plaintext)
    assert [(e.code, e.fatal) for e in pair.b.of(Misbehaviour)] == [(code, False)]
    assert pair.b.session.strikes == strikes + 1
    assert [e.code for e in pair.a.of(PeerReportedError)] == [code]
    assert plaintext not in decoded  # refused by the header walk: cbor2 never saw it
    assert pair.b.session.state is State.OPEN
    # The session goes on: a's next packet is taken (quarantined, a is sandbox at b).
    p = make_packet(ALICE, 1)
    pair.a.session.push([p], pair.now)
    pair.settle()
    assert p.id in pair.b.node.ids(quarantined=True)


def skip_ranges(n: int) -> bytes:
    """A negentropy message of ``n`` Skip ranges of three bytes each (all at timestamp 0)."""
    return b"\x61" + b"\x01\x00\x00" * n


def test_a_recon_message_of_too_many_ranges_is_refused_after_reading_the_limit() -> None:
    items = ItemSet((i + 1, bytes([i % 256]) * 32) for i in range(1000))
    responder = Responder(items, frame_size_limit=400_000, max_ranges=20_000)
    with pytest.raises(Exception) as caught:
        responder.reconcile(skip_ranges(174_000))
    assert getattr(caught.value, "code", None) == ErrorCode.OVER_BUDGET
    assert responder.last_cost == 20_001  # it stopped at the first range over the limit
    assert responder.reconcile(skip_ranges(20_000)) == b"\x61"  # at the limit: answered
    assert responder.last_cost == 20_000


def test_a_malformed_recon_message_is_charged_the_most_it_could_have_cost() -> None:
    responder = Responder(ItemSet([]), frame_size_limit=400_000, max_ranges=20_000)
    truncated = skip_ranges(1000)[:-1]  # the last range's mode is missing
    with pytest.raises(Exception, match="ends inside"):
        responder.reconcile(truncated)
    assert responder.last_cost == len(truncated) // 3
    long_and_bad = b"\x61\x80" + bytes(300_000)  # a non-minimal varint in the first range
    with pytest.raises(Exception, match="non-minimal varint"):
        responder.reconcile(long_and_bad)
    assert responder.last_cost == 20_001  # the most: what the range limit lets a message cost


def inject_recon(pair: Any, message: bytes, round_: int = 0) -> None:
    pair.a.inject(f.ReconFrame(round_, message))


def test_a_member_flooding_reconciliation_is_struck_and_its_work_is_bounded() -> None:
    pair = open_pair(CORE, CORE, [make_packet(ALICE, i) for i in range(5)], [make_packet(BOB, 9)])
    assert not pair.b.of(Misbehaviour)
    budget = DEFAULT_BUDGET
    # One message of 174k ranges (512 KiB): refused at range 20,001.
    inject_recon(pair, skip_ranges(174_000))
    assert [(e.code, e.fatal) for e in pair.b.of(Misbehaviour)] == [("over_budget", False)]
    snapshot = pair.b.session._recon._snapshot
    assert snapshot is not None and snapshot.last_cost == budget.recon_max_ranges + 1
    # Messages at the range limit, back to back: the burst pays for 20 of them, then each is
    # refused unread until the bucket refills.
    answered = refused = 0
    for _ in range(30):
        before = len(pair.b.of(Misbehaviour))
        inject_recon(pair, skip_ranges(budget.recon_max_ranges))
        if len(pair.b.of(Misbehaviour)) > before:
            refused += 1
            assert pair.b.of(Misbehaviour)[-1].code == "over_budget"
        else:
            answered += 1
    spent = budget.recon_max_ranges + 1 + answered * budget.recon_max_ranges
    assert answered == -(-(budget.recon_cost_burst - budget.recon_max_ranges - 1) // budget.recon_max_ranges)
    assert spent <= budget.recon_cost_burst + budget.recon_max_ranges  # debt of one message at most
    assert refused == 30 - answered
    assert pair.b.session.state is State.OPEN
    # Time refills the bucket: the per-second rate, not a ban.
    pair.now += (spent - budget.recon_cost_burst) / budget.recon_cost_per_s + 1
    before = len(pair.b.of(Misbehaviour))
    inject_recon(pair, skip_ranges(100))
    assert len(pair.b.of(Misbehaviour)) == before


def test_a_reconnect_buys_no_fresh_burst_the_meter_is_the_peers() -> None:
    gate = PolicyGate(budget_policy(recon_cost_burst=60_000), "self")
    budget = gate.budget
    first = open_pair(CORE, CORE)
    first.b.session.gate = gate
    for _ in range(3):  # 3 x 20,000 ranges: the burst is spent
        inject_recon(first, skip_ranges(budget.recon_max_ranges))
    assert not first.b.of(Misbehaviour)
    second = open_pair(CORE, CORE)  # the same peer again, in a new session
    second.now = first.now
    second.b.session.gate = gate
    inject_recon(second, skip_ranges(10))
    assert [e.code for e in second.b.of(Misbehaviour)] == ["over_budget"]
    # Another peer has its own meter.
    assert gate.recon_meter("someone else").level(budget, first.now) == budget.recon_cost_burst


def test_an_honest_sync_stays_inside_the_budget() -> None:
    a_packets = [make_packet(ALICE, i) for i in range(400)]
    b_packets = [make_packet(BOB, i) for i in range(400)]
    pair = open_pair(CORE, CORE, a_packets, b_packets)
    assert pair.a.node.ids() == pair.b.node.ids() == {p.id for p in a_packets + b_packets}
    assert not pair.a.of(Misbehaviour) and not pair.b.of(Misbehaviour)


def test_the_cost_meter_refuses_only_while_empty_and_a_clock_stepping_back_refills_nothing() -> None:
    budget = MemberBudget(recon_cost_per_s=10, recon_cost_burst=100)
    meter = CostMeter()
    meter.admit(budget, 0.0)
    meter.spend(150, budget, 0.0)  # one message may overdraw
    assert meter.level(budget, 0.0) == -50
    with pytest.raises(Exception, match="over 10 ranges per second"):
        meter.admit(budget, 4.0)  # -50 + 40
    assert meter.level(budget, -100.0) == -50
    meter.admit(budget, 5.5)
    assert meter.level(budget, 1000.0) == 100


def budget_policy(**keys: int) -> Policy:
    """The default policy with some [limits] keys changed (each is written out there)."""
    text = DEFAULT_POLICY_TEXT
    for key, value in keys.items():
        text, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert found, f"default.toml does not document {key}"
    return Policy.load(text)


def test_the_policy_sets_every_budget_and_the_session_uses_it() -> None:
    assert Policy.default().limits.budget == DEFAULT_BUDGET
    keys = dict(decode_max_depth=5, decode_max_items=9000, decode_max_alloc=5_000_000,
                recon_max_ranges=12_000, recon_cost_per_s=2000, recon_cost_burst=60_000)
    policy = budget_policy(**keys)
    assert policy.limits.budget == MemberBudget(**keys)
    gate = PolicyGate(policy, "self")
    pair = open_pair(CORE, CORE)
    pair.b.session.gate = gate
    assert pair.b.session.budget == MemberBudget(**keys)
    inject_recon(pair, skip_ranges(12_001))
    assert [e.code for e in pair.b.of(Misbehaviour)] == ["over_budget"]
    assert "12000 ranges" in pair.b.of(Misbehaviour)[0].reason


@pytest.mark.parametrize(
    "key, value, least",
    [("decode_max_depth", 3, 4), ("decode_max_items", 100, 8192), ("decode_max_alloc", 1024, 4194304),
     ("recon_max_ranges", 10, 10_000), ("recon_cost_per_s", 0, 1000), ("recon_cost_burst", 1, 50_000),
     ("audit_summary_s", 0, 1)],
)
def test_a_policy_cannot_set_a_budget_below_what_an_honest_peer_needs(
    key: str, value: int, least: int
) -> None:
    with pytest.raises(PolicyError, match=f"{key} must be an integer ≥ {least}, not {value}"):
        budget_policy(**{key: value})


def test_a_session_without_a_policy_uses_the_defaults() -> None:
    pair = open_pair(CORE, CORE)
    assert isinstance(pair.b.session, Session) and pair.b.session.gate is None
    assert pair.b.session.budget is DEFAULT_BUDGET
