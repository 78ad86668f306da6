"""A newcomer's path with real node processes: invite, join, first contact, foreign, endpoints."""

import functools
import json
import time
from datetime import datetime

from ark_lattice.identity import Identity
from ark_lattice.processes import run_cli, wait_for
from ark_lattice.timestamps import RFC3339

from conftest import items, packet_ids

QUIET = ("--no-mdns", "--no-multicast")  # no discovery: only the links a test makes
TIMESTAMP = RFC3339  # the one JSON time format (ark_lattice/timestamps.py)


def ok(home, *args):
    result = run_cli(home, *args)
    assert result.returncode == 0, (args, result.stderr.decode())
    return result.stdout.decode()


def as_json(home, *args):
    """The command's JSON; a listing's items (conftest.items checks its schema name)."""
    return items(json.loads(ok(home, *args, "--json")))


def node_id(home):
    return as_json(home, "identity", "show")["node_id"]


def events(home, kind):
    return as_json(home, "ledger", "log", "--kind", kind)


def one_sentence(result, *words):
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def invite(home, *args):
    doc = as_json(home, "federation", "invite", *args)
    assert doc["schema"] == "ark-lattice.invite/1" and TIMESTAMP.match(doc["expires_at"])
    return doc


def test_a_newcomer_joins_with_an_invite_and_syncs_with_no_other_step(homes, start_node):
    a, b = homes("a"), homes("b")
    ok(a, "init", "--name", "site-a")
    ok(b, "init", "--name", "site-b")  # its own federation key, as every `init` makes
    node_a = start_node(a, *QUIET)
    start_node(b, *QUIET)
    text = ok(a, "federation", "invite", "--no-qr")
    line = next(x for x in text.splitlines() if x.startswith("ARK-INVITE:"))
    assert (a / "federation.key").read_bytes().hex() not in line.lower()
    human = ok(b, "federation", "join", line)
    assert "joined the federation of site-a" in human

    published = _publish(a)
    wait_for(lambda: published in packet_ids(b), timeout=30, what="the packet to reach the newcomer")

    # Both ledgers hold the introduction; each side has the other at core.
    (joined,) = events(b, "federation.joined")
    assert joined["subject"] == node_id(a)
    (introduced,) = events(a, "peer.introduced")
    assert introduced["subject"] == node_id(b) and introduced["data"]["tier"] == "core"
    assert (b / "federation.key").read_bytes() == (a / "federation.key").read_bytes()
    tiers = {p["id"]: p["tier"] for p in as_json(a, "peers", "list")}
    assert tiers[node_id(b)] == "core"

    # The invite was for one node: a second use is refused, in one sentence, and changes nothing.
    c = homes("c")
    ok(c, "init", "--name", "site-c")
    key_before = (c / "federation.key").read_bytes()
    one_sentence(run_cli(c, "federation", "join", line), "already used")
    assert (c / "federation.key").read_bytes() == key_before
    errors = events(a, "protocol.error")
    assert any(e["data"]["code"] == "invite_refused" for e in errors), errors
    assert node_a.current_status()["pending"] == 0


def _publish(home):
    body = home.parent / "report.md"
    body.write_text("the newcomer should see this\n")
    return ok(home, "packets", "publish", "--topic", "notes/site-a", str(body)).strip().split()[-1]


def test_an_expired_invite_is_refused_with_one_sentence(homes, start_node):
    a, b = homes("a"), homes("b")
    ok(a, "init", "--name", "site-a")
    ok(b, "init", "--name", "site-b")
    start_node(a, *QUIET)
    doc = invite(a, "--expires", "1s")
    expires = datetime.fromisoformat(doc["expires_at"]).timestamp()
    wait_for(lambda: time.time() > expires + 0.1, timeout=10, what="the invite to expire")
    one_sentence(run_cli(b, "federation", "join", doc["invite"]), "expired", "ask for a new one")
    one_sentence(run_cli(b, "federation", "join", "ARK-INVITE:GARBAGE"), "damaged")
    assert not events(b, "federation.joined")

    # A revoked invite is refused too; the listing says what became of each.
    second = invite(a, "--uses", "2")
    ok(a, "federation", "invites", "revoke", second["id"][:6])
    one_sentence(run_cli(b, "federation", "join", second["invite"]), "no such invite")
    listing = as_json(a, "federation", "invites")
    assert [(i["id"], i["state"]) for i in listing] == [(doc["id"], "expired")]
    for item in listing:
        assert TIMESTAMP.match(item["expires_at"]) and TIMESTAMP.match(item["created_at"])
    assert "psk" not in json.dumps(listing) and "expired" in ok(a, "federation", "invites")
    assert events(a, "invite.revoked")[0]["subject"] == second["id"]


def test_a_stopped_newcomer_joins_then_connects_when_it_starts(homes, start_node):
    a, b = homes("a"), homes("b")
    ok(a, "init", "--name", "site-a")
    ok(b, "init", "--name", "site-b")
    start_node(a, *QUIET)
    doc = invite(a, "--tier", "sandbox")
    ok(b, "peers", "add", str(Identity.generate().node_id), "--tier", "core")  # of B's old federation
    human = ok(b, "federation", "join", doc["invite"])  # B is not running: the CLI does the join
    assert "start the node" in human and "left its old federation: 1 peer(s)" in human
    assert list(b.glob("federation.key.before-join-*"))
    listing = as_json(b, "federation", "endpoints")
    (item,) = listing
    assert item["source"] == "invite" and item["peer"] == node_id(a) and item["dialled"]
    assert item["last_result"] == "the node is not running"
    start_node(b, *QUIET)
    wait_for(lambda: any(c["state"] == "open" for c in as_json(a, "federation", "status")["connections"]),
             timeout=30, what="the newcomer's session to open")
    tiers = {p["id"]: p["tier"] for p in as_json(a, "peers", "list")}
    assert tiers[node_id(b)] == "sandbox"  # the tier the invite named


def test_nodes_of_two_federations_each_show_the_other_as_foreign(homes, start_node):
    a, b = homes("a"), homes("b")
    ok(a, "init", "--name", "site-a")
    ok(b, "init", "--name", "site-b")
    node_a, node_b = start_node(a, *QUIET), start_node(b, *QUIET)
    ok(a, "federation", "add-peer", node_b.url)
    ok(b, "federation", "add-peer", node_a.url)
    def sees_foreign(node, other):
        status = node.current_status()
        dialled = any(t["url"] == other.url and t["foreign"] for t in status["dialling"])
        return dialled and bool(status["foreign"])

    for home, node, other in ((a, node_a, node_b), (b, node_b, node_a)):
        wait_for(functools.partial(sees_foreign, node, other), timeout=30,
                 what="each side to see the other as foreign")
        human = ok(home, "federation", "status")
        assert "another federation" in human and other.url in human
        assert "a node at 127.0.0.1 is in another federation" in human
        log = node.output()
        assert f"peer at {other.url} is in another federation" in log
        assert "dialled us from another federation" in log
        endpoints = as_json(home, "federation", "endpoints")
        assert [e["last_result"] for e in endpoints if e["url"] == other.url] == ["in another federation"]


def test_first_contact_is_pending_until_accepted_or_denied(homes, start_node):
    from conftest import init_federation

    ids = init_federation(homes, "a", "b", "c")  # one key, but nobody has given anyone a tier
    a, b, c = homes("a"), homes("b"), homes("c")
    node_a = start_node(a, *QUIET)
    for home in (b, c):
        start_node(home, *QUIET)
        ok(home, "federation", "add-peer", node_a.url)
    wait_for(lambda: node_a.current_status()["pending"] == 2, timeout=30, what="two first contacts")
    listing = as_json(a, "peers", "pending")
    assert {i["id"] for i in listing} == {ids["b"], ids["c"]}
    for item in listing:
        assert TIMESTAMP.match(item["first_seen"]) and item["name"] in ("b", "c") and item["endpoints"]
    human = ok(a, "peers", "pending")
    assert ids["b"][:16] in human and "peers accept" in human
    assert "2 peer(s) made first contact" in ok(a, "federation", "status")

    ok(a, "peers", "accept", ids["b"][:8], "--tier", "core")
    ok(a, "peers", "deny", ids["c"][:8])
    assert as_json(a, "peers", "pending") == []
    tiers = {p["id"]: p["tier"] for p in as_json(a, "peers", "list")}
    assert tiers[ids["b"]] == "core" and tiers[ids["c"]] == "blocked"
    wait_for(lambda: node_a.current_status()["pending"] == 0, timeout=10, what="the count to drop")
    refused = run_cli(a, "peers", "accept", ids["b"][:8], "--tier", "blocked")
    one_sentence(refused, "peers deny")


def test_endpoints_are_listed_with_their_source_and_can_be_removed(homes, start_node):
    a = homes("a")
    ok(a, "init", "--name", "site-a")
    ok(a, "federation", "add-peer", "ws://127.0.0.1:9")  # nothing listens there
    peer = str(Identity.generate().node_id)
    bad = run_cli(a, "peers", "add", peer, "--endpoint", "http://127.0.0.1:9")
    one_sentence(bad, "ws://HOST:PORT")  # the same validator as add-peer
    ok(a, "peers", "add", peer, "--tier", "core", "--endpoint", "ws://127.0.0.1:10/")
    start_node(a, *QUIET)

    def items():
        return {i["url"]: i for i in as_json(a, "federation", "endpoints")}

    seen = wait_for(lambda: (got := items()) and all(i["dials"] for i in got.values()) and got,
                    timeout=30, what="both addresses to be dialled")
    assert set(seen) == {"ws://127.0.0.1:9", "ws://127.0.0.1:10"}
    assert seen["ws://127.0.0.1:9"]["source"] == "operator" and seen["ws://127.0.0.1:9"]["peer"] is None
    assert seen["ws://127.0.0.1:10"]["peer"] == peer
    for item in seen.values():
        assert item["last_result"] not in ("connected", "not dialled yet")
        assert item["next_attempt"] is None or TIMESTAMP.match(item["next_attempt"])
    human = ok(a, "federation", "endpoints")
    assert "ws://127.0.0.1:9" in human and "operator" in human

    ok(a, "federation", "endpoints", "remove", "ws://127.0.0.1:10")
    wait_for(lambda: set(items()) == {"ws://127.0.0.1:9"}, timeout=10, what="the address to go")
    assert "ws://127.0.0.1:10" not in {t["url"] for t in as_json(a, "federation", "status")["dialling"]}
    one_sentence(run_cli(a, "federation", "endpoints", "remove", "ws://127.0.0.1:10"), "does not dial")
    assert events(a, "endpoint.removed")[0]["subject"] == "ws://127.0.0.1:10"


def test_the_federation_key_moves_by_hand_too_even_to_a_running_node(homes, start_node):
    a, b = homes("a"), homes("b")
    ok(a, "init", "--name", "site-a")
    ok(b, "init", "--name", "site-b")
    node_a, node_b = start_node(a, *QUIET), start_node(b, *QUIET)
    exported = a.parent / "fed.key"
    ok(a, "federation", "key", "export", str(exported))
    assert exported.stat().st_mode & 0o777 == 0o600
    assert exported.read_bytes() == (a / "federation.key").read_bytes()
    one_sentence(run_cli(a, "federation", "key", "export", str(exported)), "exists")
    (a.parent / "short.key").write_bytes(b"x" * 5)
    one_sentence(run_cli(b, "federation", "key", "import", str(a.parent / "short.key")), "not 32")
    ok(b, "federation", "key", "import", str(exported))
    assert list(b.glob("federation.key.before-import-*"))
    ok(b, "peers", "add", node_id(a), "--tier", "core")
    ok(b, "federation", "add-peer", node_a.url)
    wait_for(lambda: any(c["state"] == "open" for c in node_b.current_status()["connections"]),
             timeout=30, what="a session with the imported key")


def test_garbage_on_the_join_path_gets_a_refusal_and_an_audit_entry(homes, start_node):
    import asyncio

    import cbor2
    from websockets.asyncio.client import connect

    a = homes("a")
    ok(a, "init", "--name", "site-a")
    node = start_node(a, *QUIET)

    async def send(message):
        async with connect(node.url + "/join") as ws:
            await ws.send(message)
            answer = await ws.recv()
            assert isinstance(answer, bytes)
            return cbor2.loads(answer)

    for message in ("hello", b"\xff" * 10, cbor2.dumps(["join", 1, b"12345678", b"x" * 48])):
        answer = asyncio.run(send(message))
        assert answer[0] == "refused" and isinstance(answer[2], str), answer
    assert "no such invite" in answer[2]
    wait_for(lambda: len(events(a, "protocol.error")) >= 3, timeout=10, what="three audit entries")
    assert node.current_status()["connections"] == []  # the session port is not disturbed
