"""The pure adoption rule (protocol/governance.py) and the governance documents it reads."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.alerts import Alert
from ark_lattice.errors import Malformed
from ark_lattice.governance.documents import (
    Membership,
    Proposal,
    approval_equivocation,
    approval_evidence,
    approval_packet,
    check_threshold,
    default_threshold,
    members_payload,
    membership_packet,
    proposal_packet,
    tier_payload,
)
from ark_lattice.hlc import pack
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.protocol.governance import Adopted, Equivocated, Governance, Halted
from ark_lattice.tiers import TrustTier

T0 = 1_700_000_000  # proposals are created at T0 (Unix seconds) and expire an hour later
KEYS = [Identity.from_seed(bytes([i + 1]) * 32) for i in range(6)]


def at(seconds: float) -> int:
    return pack(int(seconds * 1000), 0)


def genesis(members: list[Identity], k: int | None = None, founder: Identity | None = None) -> Packet:
    founder = founder or members[0]
    keys = [m.node_id.key for m in members]
    return membership_packet(founder, k or default_threshold(len(keys)), keys, created_at=at(T0 - 10))


def propose(
    author: Identity, membership: Membership, *, kind: str = "policy", base: int = 0,
    payload: bytes = b"version = 1\n", expires: int = T0 + 3600, nonce: int = 0,
) -> Packet:
    return proposal_packet(
        author, kind=kind, base=base, membership=membership, payload=payload, created=T0,
        not_before=T0, expires=expires, created_at=at(T0) + nonce,
    )


def approve(who: Identity, proposal: Packet, when: float = T0 + 60, nonce: int = 0) -> Packet:
    return approval_packet(who, Proposal.from_packet(proposal), created_at=at(when) + nonce)


def four() -> tuple[Governance, Membership]:
    g = Governance()
    assert g.add(genesis(KEYS[:4])) == []
    assert g.membership is not None and g.membership.threshold == 3
    return g, g.membership


def adopted(outcomes: list) -> list[Adopted]:
    return [o for o in outcomes if isinstance(o, Adopted)]


def test_two_approvals_do_nothing_the_third_adopts() -> None:
    g, m = four()
    p = propose(KEYS[0], m)
    assert g.add(p) == []
    assert g.add(approve(KEYS[0], p)) == []
    assert g.add(approve(KEYS[1], p)) == []
    assert g.versions["policy"] == 0
    (done,) = adopted(g.add(approve(KEYS[2], p)))
    assert done.proposal.id == p.id and g.versions["policy"] == 1
    assert sorted(a.header.author.key for a in done.approvals) == sorted(k.node_id.key for k in KEYS[:3])
    assert g.add(approve(KEYS[3], p)) == []  # adopted once


def test_one_key_counts_once_however_many_approvals_it_signs() -> None:
    g, m = four()
    p = propose(KEYS[0], m)
    g.add(p)
    # Two approval packets (two ids, two signatures) by one key, and the same key again.
    for nonce in range(3):
        assert g.add(approve(KEYS[1], p, nonce=nonce)) == []
    assert g.add(approve(KEYS[2], p)) == []
    (state,) = g.proposals()
    assert len(state.keys) == 2 and state.status == "pending"
    (done,) = adopted(g.add(approve(KEYS[3], p)))
    assert len(done.approvals) == 3 and len({a.header.author for a in done.approvals}) == 3


def test_non_members_and_bad_signatures_never_count() -> None:
    g, m = four()
    p = propose(KEYS[0], m)
    g.add(p)
    g.add(approve(KEYS[4], p))  # not a member
    g.add(approve(KEYS[5], p))
    good = approve(KEYS[1], p)
    g.add(good)
    # A member's approval with a broken signature: built directly, skipping verification.
    real = approve(KEYS[2], p)
    forged = dataclasses.replace(real, signature=bytes(64))
    assert g.add(forged) == [] and forged.id in g.rejected
    assert g.versions["policy"] == 0 and len(g.proposals()[0].keys) == 1


def test_an_approval_out_of_the_window_never_counts() -> None:
    g, m = four()
    p = propose(KEYS[0], m, expires=T0 + 100)
    g.add(p)
    g.add(approve(KEYS[0], p, when=T0 + 10))
    g.add(approve(KEYS[1], p, when=T0 + 20))
    assert g.add(approve(KEYS[2], p, when=T0 + 101)) == []  # signed after it expired
    assert g.add(approve(KEYS[3], p, when=T0 - 1)) == []  # before it was open
    assert g.versions["policy"] == 0


def test_a_wrong_base_or_a_stale_signer_set_never_adopts() -> None:
    g, m = four()
    ahead = propose(KEYS[0], m, base=1)
    other = Membership(1, 3, tuple(sorted(k.node_id.key for k in KEYS[1:5])), b"x" * 32)
    frozen_elsewhere = propose(KEYS[0], other, nonce=1)
    for p in (ahead, frozen_elsewhere):
        g.add(p)
        for who in KEYS[:4]:
            assert g.add(approve(who, p)) == []
    assert {s.status for s in g.proposals()} == {"stale"}
    assert g.versions["policy"] == 0


def test_an_equivocating_key_is_caught_and_its_approvals_dropped() -> None:
    g, m = four()
    p1 = propose(KEYS[0], m, payload=b"version = 1\n# one\n")
    p2 = propose(KEYS[1], m, payload=b"version = 1\n# two\n")
    g.add(p1)
    g.add(p2)
    first = approve(KEYS[3], p1)
    g.add(first)
    g.add(approve(KEYS[0], p1))
    second = approve(KEYS[3], p2)
    (caught,) = g.add(second)
    assert isinstance(caught, Equivocated)
    assert caught.key == KEYS[3].node_id.key and {caught.first.id, caught.second.id} == {first.id, second.id}
    # KEYS[3] no longer counts: with it, these would be three approvals of p1; without, two.
    assert g.add(approve(KEYS[1], p1)) == []
    assert g.versions["policy"] == 0
    (done,) = adopted(g.add(approve(KEYS[2], p1)))
    assert KEYS[3].node_id.key not in {a.header.author.key for a in done.approvals}
    # The evidence proves itself to anyone, alone.
    evidence = approval_evidence(caught.first, caught.second)
    assert approval_equivocation(evidence, caught.node)
    assert not approval_equivocation(evidence, str(KEYS[0].node_id))
    alert = Alert("critical", "equivocation", caught.node, bytes(16), evidence)
    assert alert.self_proving()
    # Two approvals of the same proposal prove nothing.
    assert not approval_equivocation(approval_evidence(first, approve(KEYS[3], p1, nonce=1)), caught.node)


def test_two_genesis_documents_halt_governance() -> None:
    g = Governance()
    g.add(genesis(KEYS[:4]))
    (halt,) = g.add(genesis(KEYS[1:5], founder=KEYS[1]))
    assert isinstance(halt, Halted) and halt.kind == "*"
    p = propose(KEYS[0], g.membership)  # type: ignore[arg-type]
    g.add(p)
    for who in KEYS[:4]:
        assert g.add(approve(who, p)) == []
    assert g.proposals()[0].status == "halted"


def test_members_rotation_signs_the_new_set_in() -> None:
    g = Governance()
    g.add(genesis(KEYS[:1]))  # the founder alone: k = 1
    m1 = g.membership
    assert m1 is not None and m1.threshold == 1 and g.versions["members"] == 1
    rotate = propose(KEYS[0], m1, kind="members", base=1,
                     payload=members_payload(3, [k.node_id.key for k in KEYS[:4]]))
    g.add(rotate)
    (done,) = adopted(g.add(approve(KEYS[0], rotate)))
    m2 = g.membership
    assert m2 is not None and m2.version == 2 and m2.threshold == 3 and len(m2.members) == 4
    assert m2.established_by == rotate.id
    # A proposal frozen under v1 is stale now; one under v2 needs three of the four.
    old = propose(KEYS[0], m1, nonce=1)
    g.add(old)
    g.add(approve(KEYS[0], old))
    assert g.versions["policy"] == 0
    new = propose(KEYS[0], m2, kind="tier", payload=tier_payload(KEYS[5].node_id, TrustTier.BLOCKED), nonce=2)
    g.add(new)
    for who in KEYS[1:3]:
        assert g.add(approve(who, new)) == []
    assert adopted(g.add(approve(KEYS[3], new)))


def test_thresholds() -> None:
    assert [default_threshold(n) for n in (1, 2, 3, 4, 7, 10)] == [1, 2, 3, 3, 5, 7]
    check_threshold(3, 4)
    for k, n in ((2, 4), (1, 2), (5, 4), (0, 1)):
        with pytest.raises(Malformed):
            check_threshold(k, n)
    with pytest.raises(Malformed):
        members_payload(2, [k.node_id.key for k in KEYS[:4]])
    # One key named twice is one member: four names, three keys, k = 3 of 3.
    assert members_payload(3, [KEYS[0].node_id.key] * 2 + [k.node_id.key for k in KEYS[1:3]])


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_adoption_does_not_depend_on_arrival_order(rng: random.Random) -> None:
    """Nodes holding the same packets agree, whatever order they came in."""
    g0, m = four()
    p1 = propose(KEYS[0], m, payload=b"version = 1\n# a\n")
    p2 = propose(KEYS[1], m, payload=b"version = 1\n# b\n")
    packets = [p1, p2, approve(KEYS[0], p1), approve(KEYS[1], p1), approve(KEYS[2], p2),
               approve(KEYS[3], p1), approve(KEYS[3], p1, nonce=1)]
    rng.shuffle(packets)
    g = Governance()
    g.add(genesis(KEYS[:4]))
    result = adopted(g.add_all(packets))
    assert [a.proposal.id for a in result] == [p1.id]
    assert g.versions["policy"] == 1


def test_approving_anew_after_a_proposal_lapsed_is_not_equivocation() -> None:
    g, m = four()
    lapsed = propose(KEYS[0], m, expires=T0 + 100)
    g.add(lapsed)
    first = approve(KEYS[3], lapsed, when=T0 + 10)
    g.add(first)
    fresh = proposal_packet(KEYS[1], kind="policy", base=0, membership=m, payload=b"version = 1\n# again\n",
                            created=T0 + 200, not_before=T0 + 200, expires=T0 + 900, created_at=at(T0 + 200))
    g.add(fresh)
    second = approve(KEYS[3], fresh, when=T0 + 210)  # after the first proposal expired
    assert g.add(second) == [] and not g.equivocators
    assert not approval_equivocation(approval_evidence(first, second), str(KEYS[3].node_id))
    for who in KEYS[:2]:
        g.add(approve(who, fresh, when=T0 + 220))
    assert g.versions["policy"] == 1  # KEYS[3]'s second approval counted


CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["membership", "proposal", "approval"]), CBOR_VALUES, st.binary(max_size=64))
def test_any_governance_body_is_taken_or_rejected_never_a_crash(kind: str, body: object, raw: bytes) -> None:
    import cbor2

    g, _ = four()
    for data in (cbor2.dumps(body, canonical=True), raw):
        packet = Packet.create(KEYS[4], topic="governance", kind=kind, body=data, created_at=at(T0))
        g.add(packet)  # never raises: a bad document is rejected, recorded with its reason
        assert packet.id in g.rejected


def test_documents_round_trip() -> None:
    g, m = four()
    p = propose(KEYS[0], m, kind="tier", payload=tier_payload(KEYS[5].node_id, TrustTier.BLOCKED))
    parsed = Proposal.from_packet(p)
    again = proposal_packet(KEYS[0], kind="tier", base=0, membership=m, payload=parsed.payload,
                            created=parsed.created, not_before=parsed.not_before, expires=parsed.expires,
                            created_at=p.header.created_at)
    assert again.id == p.id  # one document, one encoding, one id
    assert Membership.from_packet(genesis(KEYS[:4])).members == m.members


def test_two_proposals_reaching_k_at_once_halt_the_kind() -> None:
    """P1 lapsed with three approvals given in time; members then approved P2 (no overlap: not
    equivocation). A node that learns of both at once must not pick one: it halts policy."""
    m = four()[1]
    p1 = propose(KEYS[0], m, expires=T0 + 100)
    p2 = proposal_packet(KEYS[3], kind="policy", base=0, membership=m, payload=b"version = 1\n# two\n",
                         created=T0 + 200, not_before=T0 + 200, expires=T0 + 900, created_at=at(T0 + 200))
    late = Governance()
    packets = [p1, p2, *(approve(k, p1, when=T0 + 10) for k in KEYS[:3]),
               *(approve(k, p2, when=T0 + 210) for k in KEYS[1:4])]
    assert late.add_all(packets) == []  # no membership yet: nothing decides
    (halt,) = late.add(genesis(KEYS[:4]))
    assert isinstance(halt, Halted) and halt.kind == "policy" and set(halt.proposals) == {p1.id, p2.id}
    assert late.versions["policy"] == 0 and {s.status for s in late.proposals()} == {"halted"}
    # Another kind is not halted.
    t = propose(KEYS[0], m, kind="tier", payload=tier_payload(KEYS[5].node_id, TrustTier.BLOCKED), nonce=5)
    late.add(t)
    assert adopted(late.add_all([approve(k, t) for k in KEYS[:3]]))
