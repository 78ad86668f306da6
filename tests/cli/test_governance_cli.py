"""`ark-lattice governance` on one stopped node: bad input is one sentence and exit 2, and a
founder alone (k = 1 of 1) can found, propose, approve, list, show and verify offline."""

import json

from ark_lattice.governance.documents import packet_from_bytes
from ark_lattice.identity import Identity
from ark_lattice.policy import DEFAULT_POLICY_TEXT


def one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_before_a_membership_exists_the_node_says_so(cli, tmp_path):
    cli("init")
    assert "no membership yet" in cli("governance", "members").stdout
    assert cli.json("governance", "members")["membership"] is None
    policy = tmp_path / "p.toml"
    policy.write_text(DEFAULT_POLICY_TEXT)
    refused = cli("governance", "propose", "--kind", "policy", str(policy), "--expires", "1h", ok=False)
    assert "no membership yet" in one_line(refused)


def test_bad_input_is_one_sentence(cli, tmp_path):
    def refused(*args: str, code: int = 2) -> str:
        return one_line(cli("governance", *args, ok=False), code)

    def propose(kind: str, path, expires: str = "1h", code: int = 2) -> str:
        return refused("propose", "--kind", kind, str(path), "--expires", expires, code=code)

    cli("init")
    assert "not a node ID" in refused("found", "--member", "nope")
    assert "more than" in refused("found", "--threshold", "0")
    cli("governance", "found")
    assert "already has a membership" in refused("found")
    bad_policy = tmp_path / "bad.toml"
    bad_policy.write_text(
        'version = 1\n[[rule]]\nid = "r"\neffect = "allow"\nhooks = ["query"]\ncondition = "size >"\n'
    )
    assert propose("policy", bad_policy, code=1)  # `policy check`'s one line, naming the file
    tier = tmp_path / "tier.json"
    tier.write_text('{"peer": "nope", "tier": "blocked"}')
    assert "tier proposal" in propose("tier", tier)
    tier.write_text("{not json")
    assert propose("tier", tier)
    assert "unknown proposal kind" in propose("bogus", tier)
    assert "bad duration" in propose("tier", tier, expires="soon")
    assert propose("tier", tmp_path / "missing")
    assert refused("approve", "zz")
    assert refused("show", "abcdef")
    members = tmp_path / "m.json"
    ids = [str(Identity.generate().node_id) for _ in range(4)]
    members.write_text(json.dumps({"members": ids, "threshold": 2}))
    assert "more than 4/2" in propose("members", members)


def test_a_founder_alone_adopts_offline_and_anyone_can_reverify(cli, tmp_path):
    cli("init")
    cli("governance", "found")
    assert cli.json("governance", "members")["membership"]["threshold"] == 1
    peer = str(Identity.generate().node_id)
    tier = tmp_path / "tier.json"
    tier.write_text(json.dumps({"peer": peer, "tier": "blocked"}))
    pid = cli.json("governance", "propose", "--kind", "tier", str(tier), "--expires", "10m")["id"]
    (row,) = cli.json("governance", "list")
    assert (row["id"], row["status"], row["approvals"], row["k"]) == (pid, "pending", 0, 1)
    cli("governance", "approve", pid[:12])
    assert "is adopted; nothing to approve" in one_line(cli("governance", "approve", pid, ok=False))
    (row,) = cli.json("governance", "list")
    assert row["status"] == "adopted" and row["approvals"] == 1
    assert "OK" in cli("governance", "verify", pid).stdout
    shown = cli.json("governance", "show", pid)
    assert shown["payload"] == {"peer": peer, "tier": "blocked"}
    # The packets in the JSON verify on their own (strict Ed25519), away from the ledger.
    assert packet_from_bytes(bytes.fromhex(shown["packet"])).hex_id == pid
    (approval,) = shown["approval_packets"]
    assert approval["counted"]
    assert packet_from_bytes(bytes.fromhex(approval["packet"])).hex_id == approval["id"]


def test_an_adopted_round_is_what_the_models_read(cli, home, tmp_path):
    import asyncio

    from ark_lattice.governance.effects import adopted_round
    from ark_lattice.home import Home
    from ark_lattice.store.store import Store

    cli("init")
    cli("governance", "found")
    config = {"model": "mnist", "round": 4, "method": "fedavg", "mu": 0.01}
    (tmp_path / "round.json").write_text(json.dumps(config))
    path = str(tmp_path / "round.json")
    pid = cli.json("governance", "propose", "--kind", "round", path, "--expires", "1h")["id"]

    async def read() -> object:
        async with await Store.open(Home(home).ledger_path) as store:
            return await adopted_round(store, "mnist")

    assert asyncio.run(read()) is None  # proposed, not adopted
    cli("governance", "approve", pid)
    assert asyncio.run(read()) == config
