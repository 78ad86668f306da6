"""The policy gate's alert hook: rate limits per author first, then the default alert rules."""

from __future__ import annotations

import pytest

from ark_lattice.alerts import Alert, alert_packet, equivocation_evidence
from ark_lattice.hlc import pack
from ark_lattice.identity import Identity
from ark_lattice.manifest import PeerManifest
from ark_lattice.packet import Packet
from ark_lattice.policy import Hook, Policy
from ark_lattice.policy.gate import PolicyGate

NOW = 1_700_000_000.0
US = Identity.generate()
AUTHOR = Identity.generate()
VILLAIN = Identity.generate()
RELAY = str(Identity.generate().node_id)


def gate(policy: Policy | None = None) -> PolicyGate:
    return PolicyGate(policy or Policy.default(), str(US.node_id))


def raised(
    severity: str = "warning",
    about: str | None = str(VILLAIN.node_id),
    evidence: bytes | None = None,
    *,
    n: int = 0,
    author: Identity = AUTHOR,
) -> tuple[Packet, Alert]:
    alert = Alert(severity, f"alert {n}", about, n.to_bytes(16, "big"), evidence)
    return alert_packet(author, alert, created_at=pack(int(NOW * 1000) - 5000, n)), alert


def ask(g: PolicyGate, packet: Packet, alert: Alert, *, peer_tier: str = "core",
        author_tier: str = "core", peer_id: str = RELAY, now: float = NOW, hops: int = 0,
        ) -> tuple[bool | None, str | None, dict]:
    decision, exceeded, record = g.alert(
        packet, alert, peer_id=peer_id, peer_tier=peer_tier, author_tier=author_tier,
        self_proving=alert.self_proving(), now=now, hops=hops,
    )
    assert record["hook"] == "alert" and record["subject"] == packet.hex_id
    assert record["peer"] == peer_id
    if decision is None:
        assert exceeded is not None and record["allowed"] is False
        return None, exceeded, dict(record)
    assert exceeded is None and decision.hook is Hook.ALERT
    assert record["allowed"] is decision.allowed and record["rules"] == list(decision.fired)
    assert record["reason"] == decision.reason
    return decision.allowed, None, dict(record)


def equivocation(about: Identity = VILLAIN) -> bytes:
    one = PeerManifest(about.node_id, "honest", 7, int(NOW), int(NOW) + 3600).sign(about)
    two = PeerManifest(about.node_id, "liar", 7, int(NOW), int(NOW) + 3600).sign(about)
    return equivocation_evidence(one.to_bytes(), two.to_bytes())


def test_core_author_through_core_peer_warning_is_allowed() -> None:
    allowed, _, record = ask(gate(), *raised("warning"))
    assert allowed is True and record["rules"] == ["core-alerts"]
    allowed, _, _ = ask(gate(), *raised("critical"))
    assert allowed is True


def test_info_is_denied() -> None:
    allowed, _, record = ask(gate(), *raised("info"))
    assert allowed is False and record["reason"].startswith("denied by default")


@pytest.mark.parametrize(("peer_tier", "author_tier"), [
    ("sandbox", "core"), ("external", "core"), ("unknown", "core"), ("blocked", "core"),
    ("core", "sandbox"), ("core", "unknown"),
])
def test_non_core_sender_or_author_is_denied(peer_tier: str, author_tier: str) -> None:
    allowed, _, _ = ask(gate(), *raised("critical"), peer_tier=peer_tier, author_tier=author_tier)
    assert allowed is False


def test_an_alert_about_nobody_or_about_us_isolates_nobody() -> None:
    assert ask(gate(), *raised("critical", about=None))[0] is False
    assert ask(gate(), *raised("critical", about=str(US.node_id)))[0] is False
    assert ask(gate(), *raised("critical", about=str(US.node_id), evidence=equivocation(US)))[0] is False


def test_self_proving_evidence_is_allowed_from_any_author() -> None:
    packet, alert = raised("info", evidence=equivocation())
    assert alert.self_proving()
    allowed, _, record = ask(gate(), packet, alert, author_tier="unknown")
    assert allowed is True and record["rules"] == ["self-proving-alerts"]
    # Evidence that proves nothing is only an accusation: an unknown author's is denied.
    packet, alert = raised("critical", evidence=b"trust me", n=1)
    assert not alert.self_proving()
    assert ask(gate(), packet, alert, author_tier="unknown")[0] is False
    # Proof still has to come from a core peer.
    packet, alert = raised("critical", evidence=equivocation(), n=2)
    assert ask(gate(), packet, alert, peer_tier="sandbox")[0] is False


def test_the_eleventh_alert_of_one_author_in_a_burst_is_rate_limited() -> None:
    g = gate()
    results = [ask(g, *raised(n=i), peer_id=f"relay-{i}")[:2] for i in range(11)]
    assert results[:10] == [(True, None)] * 10
    allowed, exceeded, record = ask(g, *raised(n=10), peer_id="relay-x")
    assert (allowed, exceeded) == (None, "alert-author")
    assert record["rules"] == ["rate:alert-author"]
    assert record["reason"] == "rate limit alert-author exceeded"
    # Another author has a bucket of its own; the first one's refills at 5 a minute.
    other = Identity.generate()
    assert ask(g, *raised(n=11, author=other))[0] is True
    assert ask(g, *raised(n=12), now=NOW + 12.1)[0] is True


def test_policy_sees_every_alert_variable() -> None:
    condition = (
        f'severity == "warning" && accused == "{VILLAIN.node_id}" && !has_evidence '
        f'&& author == "{AUTHOR.node_id}" && author_tier == "sandbox" && peer_tier == "core" '
        f'&& peer_id == "{RELAY}" && hops == 2 && kind == "alert" && topic == "alerts" '
        f'&& direction == "inbound" && age_s == 5 && self_id == "{US.node_id}" && now == {int(NOW)}'
    )
    policy = Policy.load(
        f"""
version = 1

[[rule]]
id = "exact"
effect = "allow"
hooks = ["alert"]
condition = '''{condition}'''
"""
    )
    g = gate(policy)
    assert ask(g, *raised("warning"), author_tier="sandbox", hops=2)[0] is True
    assert ask(g, *raised("warning", n=1), author_tier="sandbox", hops=1)[0] is False


def test_limits_are_read_through_the_gate() -> None:
    g = gate()
    assert (g.strikes_to_block, g.alert_quarantine_s, g.alert_accusers_to_block) == (5, 3600, 2)
    g.replace(Policy.load("version = 1\n[limits]\nalert_quarantine_s = 60\nalert_accusers_to_block = 3\n"))
    assert (g.alert_quarantine_s, g.alert_accusers_to_block) == (60, 3)


def test_author_scope_applies_to_pushed_packets_too() -> None:
    g = gate(Policy.load(
        """
version = 1

[[rate_limit]]
id = "per-author"
scope = "author"
hooks = ["inbound_packet"]
rate = 1
burst = 1

[[rule]]
id = "all"
effect = "allow"
hooks = ["inbound_packet"]
condition = "true"
"""
    ))
    first, _ = raised(n=0)
    second, _ = raised(n=1)
    verdicts = g.packets(Hook.INBOUND_PACKET, [first, second], peer_id=RELAY, peer_tier="core",
                         strikes=0, now=NOW)
    assert verdicts.allowed == (first,) and verdicts.denied == (second,)
    assert verdicts.rate_limit == "per-author"
