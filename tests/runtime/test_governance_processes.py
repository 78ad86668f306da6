"""Governance between real node processes on loopback (issue 13, "How it is judged").

Four core nodes, k = 3, all linked to each other. Proposals and approvals are made through the
CLI where an honest operator would; what the CLI refuses to sign (a second approval by one key,
an approval of an expired proposal, an equivocation) is forged with the node's own key and put in
its ledger, then announced to the running node the way the CLI does (``packets_changed``).

What a node decided is read from its ledger by replaying its governance packets through the same
pure rule the node runs (``protocol/governance.py``), which is what ``governance list`` does.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cbor2
import pytest
from test_alert_processes import CALM, dial, wait_linked

from ark_lattice.governance.documents import (
    Membership,
    Proposal,
    approval_packet,
    proposal_packet,
)
from ark_lattice.hlc import pack
from ark_lattice.home import Home
from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.policy import DEFAULT_POLICY_TEXT, Policy
from ark_lattice.processes import NodeProcess, run_cli, wait_for
from ark_lattice.protocol.governance import Governance

from conftest import init_federation, items

NAMES = ("a", "b", "c", "d")
PAIRS = [(x, y) for i, x in enumerate(NAMES) for y in NAMES[i + 1:]]
WAIT = 20.0


class Federation:
    def __init__(
        self, homes: Callable[[str], Path], ids: dict[str, str], nodes: dict[str, NodeProcess]
    ) -> None:
        self.homes, self.ids, self.nodes = homes, ids, nodes

    def cli(self, name: str, *args: str) -> Any:
        result = run_cli(self.homes(name), *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode()

    def state(self, name: str) -> Governance:
        """The node's governance, replayed from its ledger (as `governance list` does)."""
        conn = sqlite3.connect(self.homes(name) / "ledger.db", timeout=30)
        try:
            rows = conn.execute(
                "SELECT id, header, signature, body FROM packets WHERE topic = 'governance' "
                "AND quarantined = 0 ORDER BY created_at, id"
            ).fetchall()
        finally:
            conn.close()
        g = Governance()
        g.add_all(Packet.from_store(*row) for row in rows)
        return g

    def everywhere(self, check: Callable[[Governance], bool], what: str) -> None:
        wait_for(lambda: all(check(self.state(n)) for n in NAMES), timeout=WAIT, what=what)

    def events(self, name: str, kind: str) -> list[tuple[str, dict[str, Any]]]:
        conn = sqlite3.connect(self.homes(name) / "ledger.db", timeout=30)
        try:
            rows = conn.execute("SELECT subject, data FROM events WHERE kind = ?", (kind,)).fetchall()
        finally:
            conn.close()
        return [(subject, cbor2.loads(data)) for subject, data in rows]

    def has_tier(self, name: str, peer: str, tier: str) -> bool:
        return bool(json.loads(self.cli(name, "peers", "show", peer, "--json"))["tier"] == tier)

    def identity(self, name: str) -> Identity:
        return Identity.load(Home(self.homes(name)).key_path)

    def inject(self, name: str, *packets: Packet) -> None:
        """Put forged packets in a running node's ledger and tell it, as the CLI does."""
        from ark_lattice.store.store import Store

        async def go() -> None:
            store = await Store.open(Home(self.homes(name)).ledger_path)
            try:
                await store.put_packets(list(packets))
            finally:
                await store.close()

        asyncio.run(go())
        assert self.nodes[name].ask("packets_changed") is None


async def all_core(homes: Callable[[str], Path], ids: dict[str, str]) -> None:
    """Every node core to every other (what `peers add ID --tier core` does, without a process
    per pair)."""
    from ark_lattice.store.store import Store
    from ark_lattice.tiers import TrustTier

    for name in NAMES:
        store = await Store.open(Home(homes(name)).ledger_path)
        try:
            for other in NAMES:
                if other != name:
                    await store.add_peer(ids[other], tier=TrustTier.CORE)
        finally:
            await store.close()


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="ark-"))  # a control socket path stays under 108 bytes

    def homes(name: str) -> Path:
        return root / name

    ids = init_federation(homes, *NAMES)
    asyncio.run(all_core(homes, ids))
    members = [arg for n in NAMES[1:] for arg in ("--member", ids[n])]
    result = run_cli(homes("a"), "governance", "found", *members)
    assert result.returncode == 0, result.stderr
    nodes: dict[str, NodeProcess] = {}
    try:
        for name in NAMES:
            nodes[name] = NodeProcess(homes(name), *CALM, wait=False)
        for node in nodes.values():
            node.wait_started()
        dial(homes, nodes, PAIRS)
        wait_linked(nodes, ids, PAIRS)
        federation = Federation(homes, ids, nodes)
        federation.everywhere(
            lambda g: (m := g.membership) is not None and len(m.members) == 4 and m.threshold == 3,
            "the founder's membership to reach every node",
        )
        yield federation
    finally:
        for node in nodes.values():
            node.close(grace=0)
        shutil.rmtree(root, ignore_errors=True)


def proposal_of(g: Governance, proposal_id: str) -> Any:
    return next((s for s in g.proposals() if s.proposal.id.hex() == proposal_id), None)


def test_two_approvals_do_nothing_the_third_adopts_a_policy_everywhere(
    fed: Federation, tmp_path: Path
) -> None:
    text = DEFAULT_POLICY_TEXT.replace("strikes_to_block = 5", "strikes_to_block = 7")
    digest = Policy.load(text, "new").digest
    (tmp_path / "policy.toml").write_text(text)
    out = fed.cli("a", "governance", "propose", "--kind", "policy", str(tmp_path / "policy.toml"),
                  "--expires", "10m", "--json")
    pid = json.loads(out)["id"]
    fed.cli("a", "governance", "approve", pid)
    fed.cli("b", "governance", "approve", pid)
    fed.everywhere(lambda g: (s := proposal_of(g, pid)) is not None and len(s.keys) == 2,
                   "two approvals to reach every node")
    for name in NAMES:
        assert proposal_of(fed.state(name), pid).status == "pending"
        assert fed.nodes[name].current_status()["policy"] != digest  # type: ignore[index]
    started = time.monotonic()
    fed.cli("c", "governance", "approve", pid)
    wait_for(lambda: all((fed.nodes[n].current_status() or {}).get("policy") == digest for n in NAMES),
             timeout=WAIT, what="the adopted policy to be in force on every node")
    assert time.monotonic() - started < WAIT
    for name in NAMES:
        assert proposal_of(fed.state(name), pid).status == "adopted"
        # Through the path `policy set` takes, audited with the proposal id.
        assert any(data["source"] == f"governance:{pid}" and data["digest"] == digest
                   for _, data in fed.events(name, "policy.set"))
        (adopted,) = [data for subject, data in fed.events(name, "governance.adopted") if subject == pid]
        assert adopted["effect"] == "applied" and len(set(adopted["approvers"])) == 3
    verify = run_cli(fed.homes("d"), "governance", "verify", pid)
    assert verify.returncode == 0 and b"3 distinct members" in verify.stdout


def test_one_key_under_two_approvals_counts_once(fed: Federation, tmp_path: Path) -> None:
    intruder = str(Identity.generate().node_id)
    (tmp_path / "tier.json").write_text(json.dumps({"peer": intruder, "tier": "blocked"}))
    pid = json.loads(fed.cli("a", "governance", "propose", "--kind", "tier", str(tmp_path / "tier.json"),
                             "--expires", "10m", "--json"))["id"]
    fed.cli("a", "governance", "approve", pid)
    b = fed.identity("b")
    proposal = proposal_of(fed.state("a"), pid).proposal
    now_ms = int(time.time() * 1000)
    twice = [approval_packet(b, proposal, created_at=pack(now_ms, i)) for i in range(2)]
    assert twice[0].id != twice[1].id
    fed.inject("b", *twice)
    fed.everywhere(lambda g: len(g.approvals_of(bytes.fromhex(pid))) == 3, "three approvals everywhere")
    for name in NAMES:
        state = proposal_of(fed.state(name), pid)
        assert state.status == "pending" and len(state.keys) == 2
    fed.cli("c", "governance", "approve", pid)
    fed.everywhere(lambda g: proposal_of(g, pid).status == "adopted", "the tier proposal to be adopted")

    def blocked(name: str) -> bool:
        result = run_cli(fed.homes(name), "peers", "show", intruder, "--json")
        return result.returncode == 0 and json.loads(result.stdout)["tier"] == "blocked"

    wait_for(lambda: all(blocked(n) for n in NAMES), timeout=WAIT, what="the intruder blocked everywhere")


def test_an_expired_or_wrong_base_proposal_never_adopts(fed: Federation) -> None:
    a = fed.identity("a")
    membership = fed.state("a").membership
    assert isinstance(membership, Membership)
    now = int(time.time())
    payload = json.dumps({"model": "m", "round": 1}, sort_keys=True)
    import cbor2 as _cbor

    body = _cbor.dumps(json.loads(payload), canonical=True)
    expired = proposal_packet(a, kind="round", base=0, membership=membership, payload=body, created=now - 100,
                              not_before=now - 100, expires=now - 50, created_at=pack((now - 100) * 1000, 0))
    wrong_base = proposal_packet(a, kind="round", base=4, membership=membership, payload=body, created=now,
                                 not_before=now, expires=now + 600, created_at=pack(now * 1000, 1))
    approvals = {
        name: [
            approval_packet(fed.identity(name), Proposal.from_packet(p), created_at=pack(now * 1000, 2 + i))
            for i, p in enumerate((expired, wrong_base))
        ]
        for name in ("a", "b", "c")
    }
    fed.inject("a", expired, wrong_base, *approvals["a"])
    fed.inject("b", *approvals["b"])
    fed.inject("c", *approvals["c"])
    fed.everywhere(
        lambda g: all(len(g.approvals_of(p.id)) == 3 for p in (expired, wrong_base)),
        "both proposals and all their approvals everywhere",
    )
    for name in NAMES:
        g = fed.state(name)
        assert g.versions["round"] == 0
        assert proposal_of(g, expired.hex_id).status == "pending" and not proposal_of(g, expired.hex_id).keys
        assert proposal_of(g, wrong_base.hex_id).status == "stale"
        adopted = {s for s, _ in fed.events(name, "governance.adopted")}
        assert not adopted & {expired.hex_id, wrong_base.hex_id}
    refused = run_cli(fed.homes("d"), "governance", "approve", expired.hex_id)
    assert refused.returncode != 0 and b"expired" in refused.stderr and b"Traceback" not in refused.stderr


def test_an_equivocating_approver_is_caught_on_every_node(fed: Federation, tmp_path: Path) -> None:
    d = fed.identity("d")
    ids = []
    for i in range(2):
        text = DEFAULT_POLICY_TEXT + f"\n# variant {i}\n"
        (tmp_path / f"p{i}.toml").write_text(text)
        out = fed.cli("b", "governance", "propose", "--kind", "policy", str(tmp_path / f"p{i}.toml"),
                      "--expires", "10m", "--json")
        ids.append(json.loads(out)["id"])
    # The CLI refuses to approve both; d's key signs both anyway.
    fed.cli("d", "governance", "approve", ids[0])
    refused = run_cli(fed.homes("d"), "governance", "approve", ids[1])
    assert refused.returncode != 0 and b"equivocation" in refused.stderr
    held = {s.proposal.id.hex(): s.proposal for s in fed.state("d").proposals()}
    fed.inject("d", approval_packet(d, held[ids[1]], created_at=pack(int(time.time() * 1000), 9)))
    fed.everywhere(lambda g: d.node_id.key in g.equivocators, "the equivocation to be seen everywhere")

    def alerted(name: str) -> list[dict[str, Any]]:
        result = run_cli(fed.homes(name), "alerts", "list", "--about", str(d.node_id), "--json")
        assert result.returncode == 0, result.stderr
        listed = items(json.loads(result.stdout))
        return [a for a in listed if a["self_proving"] and a["severity"] == "critical"]

    for name in NAMES:
        if name != "d":  # the accused is never shown an alert about it (DESIGN §10)
            wait_for(partial(alerted, name), timeout=WAIT, what=f"a self-proving alert on {name}")
        caught = fed.state(name).equivocators[d.node_id.key]
        assert {caught.first.hex_id, caught.second.hex_id} == {
            a.id.hex() for i in ids for a, _ in fed.state(name).approvals_of(bytes.fromhex(i))
            if a.approver == d.node_id.key
        }
    for name in ("a", "b", "c"):  # demoted by policy: self-proving evidence blocks the key
        wait_for(partial(fed.has_tier, name, str(d.node_id), "blocked"),
                 timeout=WAIT, what=f"{name} to block the equivocator")
    # Its approvals no longer count: two honest approvals of the first proposal do not adopt it.
    fed.cli("a", "governance", "approve", ids[0])
    wait_for(lambda: all(len(fed.state(n).approvals_of(bytes.fromhex(ids[0]))) == 2 for n in "abc"),
             timeout=WAIT, what="a's approval on a, b and c")
    for name in "abc":
        assert proposal_of(fed.state(name), ids[0]).status == "pending"
