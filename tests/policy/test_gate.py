"""The policy gate's packet hooks: the inputs it gives the policy, and the rates it keeps."""

from __future__ import annotations

from ark_lattice.hlc import pack
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.policy import DEFAULT_POLICY_TEXT, Hook, Policy
from ark_lattice.policy.gate import PolicyGate

NOW = 1_700_000_000.0
US = Identity.generate()
AUTHOR = Identity.generate()
PEER = str(Identity.generate().node_id)


def packets(n: int, topic: str = "notes", age_s: int = 5) -> list[Packet]:
    return [
        Packet.create(AUTHOR, topic=topic, kind="note", body=b"%d" % i,
                      created_at=pack(int(NOW * 1000) - age_s * 1000, i))
        for i in range(n)
    ]


def policy(condition: str) -> Policy:
    """The default policy and a deny rule on ``condition``."""
    hot = f'[[rule]]\nid = "hot"\neffect = "deny"\nhooks = ["inbound_packet"]\ncondition = "{condition}"\n'
    return Policy.load(DEFAULT_POLICY_TEXT + "\n" + hot)


def test_a_policy_reading_the_rates_sees_them_grow() -> None:
    # Each decision counts 1/10 s into the peer's and the topic's rate: the fourth packet at one
    # instant sees a rate over 0.35.
    for condition in ("rate_peer > 0.35", "rate_topic > 0.35"):
        gate = PolicyGate(policy(condition), str(US.node_id))
        verdicts = gate.packets(Hook.INBOUND_PACKET, packets(6), peer_id=PEER, peer_tier="core",
                                strikes=0, now=NOW, solicited=True)
        assert [r["allowed"] for r in verdicts.records] == [True, True, True, False, False, False]


def test_rates_a_policy_does_not_read_are_not_kept() -> None:
    gate = PolicyGate(Policy.default(), str(US.node_id))
    assert not {"rate_peer", "rate_topic"} & gate.policy.reads(Hook.INBOUND_PACKET)
    gate.packets(Hook.INBOUND_PACKET, packets(3), peer_id=PEER, peer_tier="core", strikes=0, now=NOW,
                 solicited=True)
    assert not gate._rates
    # A policy that reads them starts counting from nothing, as after any replace().
    gate.replace(policy("rate_peer > 0.15"))
    verdicts = gate.packets(Hook.INBOUND_PACKET, packets(2), peer_id=PEER, peer_tier="core", strikes=0,
                            now=NOW, solicited=True)
    assert [r["allowed"] for r in verdicts.records] == [True, False]


def test_every_packet_is_decided_and_recorded() -> None:
    gate = PolicyGate(Policy.default(), str(US.node_id))
    fresh, stale = packets(3), packets(2, age_s=40 * 86400)
    verdicts = gate.packets(Hook.INBOUND_PACKET, fresh + stale, peer_id=PEER, peer_tier="core",
                            strikes=0, now=NOW, solicited=True)
    assert verdicts.allowed == tuple(fresh) and verdicts.denied == tuple(stale)
    assert [r["subject"] for r in verdicts.records] == [p.hex_id for p in fresh + stale]
    rules = [["core-exchange"]] * 3 + [["core-exchange", "too-old"]] * 2
    assert [r["rules"] for r in verdicts.records] == rules
