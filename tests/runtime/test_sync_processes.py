"""Real node processes syncing over loopback WebSockets."""

import json
import signal

from ark_lattice.processes import run_cli, wait_for

from conftest import fill, init_federation, packet_ids, quarantined_ids, set_tier


def test_two_core_nodes_converge_on_ten_thousand_packets(homes, start_node):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    mine = set(fill(a, 5000, "from/a")) | set(fill(b, 5000, "from/b"))
    node_a = start_node(a)
    start_node(b)
    assert run_cli(b, "federation", "add-peer", node_a.url).returncode == 0
    wait_for(lambda: packet_ids(a) == mine and packet_ids(b) == mine, timeout=120, what="convergence")
    for home in (a, b):
        assert run_cli(home, "ledger", "verify").returncode == 0


def test_three_nodes_in_a_line_converge_through_the_middle(homes, start_node):
    ids = init_federation(homes, "a", "b", "c")
    a, b, c = (homes(n) for n in "abc")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    set_tier(b, ids["c"], "core")
    set_tier(c, ids["b"], "core")
    before = set(fill(a, 300, "from/a")) | set(fill(c, 300, "from/c"))
    _, node_b, _ = started = [start_node(h, wait=False) for h in (a, b, c)]  # side by side
    for node in started:
        node.wait_started()
    run_cli(a, "federation", "add-peer", node_b.url)
    run_cli(c, "federation", "add-peer", node_b.url)
    wait_for(lambda: all(packet_ids(h) == before for h in (a, b, c)), timeout=60, what="line convergence")
    # Live push travels A -> B -> C without waiting for a reconciliation.
    live = run_cli(a, "packets", "publish", "--topic", "live", "-", input=b"fresh").stdout.decode().strip()
    wait_for(lambda: live in packet_ids(c), timeout=30, what="live push to reach C")
    # Source attribution survives the relay: C holds A's packet signed by A.
    shown = json.loads(run_cli(c, "packets", "show", live, "--json").stdout)
    assert shown["author"] == ids["a"] and shown["source"] == ids["b"]


def test_tiers_decide_what_flows_in_both_directions(homes, start_node):
    """Hub H sees one spoke per tier; every spoke treats H as core and publishes."""
    tiers = ["core", "sandbox", "external", "unknown", "blocked"]
    ids = init_federation(homes, "h", *tiers)
    hub = homes("h")
    hub_public = set(fill(hub, 5, "public/news", start=100))
    hub_packets = set(fill(hub, 20, "hub/notes")) | hub_public
    spoke_packets = {}
    for tier in tiers:
        home = homes(tier)
        set_tier(home, ids["h"], "core")  # spokes would happily send everything to the hub
        if tier != "unknown":
            set_tier(hub, ids[tier], tier)
        spoke_packets[tier] = set(fill(home, 10, f"{tier}/notes"))
    node_h = start_node(hub, wait=False)
    nodes = {t: start_node(homes(t), wait=False) for t in tiers}
    node_h.wait_started()
    for node in nodes.values():
        node.wait_started()
    for tier in tiers:
        run_cli(homes(tier), "federation", "add-peer", node_h.url)

    core, sandbox = spoke_packets["core"], spoke_packets["sandbox"]
    wait_for(
        lambda: core | sandbox <= packet_ids(hub), timeout=60, what="core and sandbox packets at the hub"
    )
    wait_for(lambda: hub_packets | core <= packet_ids(homes("core")), timeout=60, what="hub packets at core")
    def hub_connections():
        return json.loads(run_cli(hub, "federation", "status", "--json").stdout)["connections"]

    # Every spoke but the blocked one ends up with an open session; then one more full
    # reconciliation round, so "nothing flowed" below is not just "nothing flowed yet".
    talking = {ids[t] for t in ("core", "sandbox", "external", "unknown")}
    wait_for(lambda: talking <= {c["peer"] for c in hub_connections() if c["state"] == "open"},
             timeout=60, what="sessions to open")
    for tier in tiers:
        run_cli(homes(tier), "federation", "sync")
    wait_for(lambda: not any(c["syncing"] for c in hub_connections()), timeout=30, what="syncs to finish")

    held = packet_ids(hub)
    # sandbox packets are kept apart, in quarantine, and never re-shared to core
    assert sandbox <= quarantined_ids(hub)
    assert not (sandbox & packet_ids(homes("core")))
    # nothing of ours goes to sandbox, external, unknown or blocked; nothing of theirs comes in
    for tier in ("sandbox", "external", "unknown", "blocked"):
        assert not (hub_packets & packet_ids(homes(tier))), tier
    for tier in ("external", "unknown", "blocked"):
        assert not (spoke_packets[tier] & held), tier
    # the unknown spoke was recorded as unknown, with its endpoint-less manifest
    peers = {p["id"]: p for p in json.loads(run_cli(hub, "peers", "list", "--json").stdout)["items"]}
    assert peers[ids["unknown"]]["tier"] == "unknown"
    # external: read-only queries on public topics only; answers are not stored unless saved
    ext = homes("external")
    set_tier(ext, ids["h"], "external")
    run_cli(ext, "peers", "trust-tier", ids["h"][:12], "external")
    answer = run_cli(ext, "packets", "query", "--peer", ids["h"][:12], "--topic", "public/news", "--json")
    assert answer.returncode == 0, answer.stderr
    got = {p["id"] for p in json.loads(answer.stdout)["items"]}
    assert got == hub_public
    assert not (got & packet_ids(ext))
    refused = run_cli(ext, "packets", "query", "--peer", ids["h"][:12], "--topic", "hub/notes", "--json")
    assert refused.returncode == 0 and json.loads(refused.stdout)["items"] == []
    saved = run_cli(ext, "packets", "query", "--peer", ids["h"][:12], "--topic", "public/news", "--save")
    assert saved.returncode == 0
    assert got <= packet_ids(ext)
    # The blocked spoke's connection was closed after identification and it holds nothing of ours.
    assert ids["blocked"] not in {c["peer"] for c in hub_connections() if c["state"] == "open"}
    for node in [node_h, *nodes.values()]:
        assert node.stop() == 0


def test_kill_9_of_the_receiver_mid_sync_then_restart_completes(homes, start_node):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    # Enough that B is killed with most of the sync still ahead of it (a fifth in, some 24,000
    # packets to go) and catches up through a reconciliation of many ranges after the restart.
    total = set(fill(a, 30_000, "bulk", body_size=32))
    node_a = start_node(a)
    node_b = start_node(b, "--sync-interval", "1")
    run_cli(b, "federation", "add-peer", node_a.url)
    wait_for(lambda: len(packet_ids(b)) >= 6_000, timeout=300, what="B to be part way through")
    node_b.stop(signal.SIGKILL)
    part = packet_ids(b)
    assert 0 < len(part) < len(total)
    verify = run_cli(b, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
    start_node(b, "--sync-interval", "1")
    wait_for(lambda: packet_ids(b) == total, timeout=600, what="B to finish after restart")
    verify = run_cli(b, "ledger", "verify", "--json")
    assert verify.returncode == 0, verify.stderr
    assert json.loads(verify.stdout)["packets"] == len(total)


def test_both_nodes_dialling_each_other_keep_one_session(homes, start_node):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    node_a, node_b = start_node(a), start_node(b)
    run_cli(a, "federation", "add-peer", node_b.url)
    run_cli(b, "federation", "add-peer", node_a.url)

    def sessions(home):
        conns = json.loads(run_cli(home, "federation", "status", "--json").stdout)["connections"]
        return [c for c in conns if c["state"] == "open"]

    wait_for(lambda: len(sessions(a)) == 1 and len(sessions(b)) == 1, timeout=60, what="one session each")
    # Both sides kept the same connection: one dialled it, the other accepted it.
    assert {sessions(a)[0]["role"], sessions(b)[0]["role"]} == {"initiator", "responder"}
    fresh = (
        run_cli(a, "packets", "publish", "--topic", "t", "-", input=b"after dedupe").stdout.decode().strip()
    )
    wait_for(lambda: fresh in packet_ids(b), what="the surviving session to carry a push")


def test_sync_wait_returns_once_the_catch_up_is_done(homes, start_node):
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    published = set(fill(a, 3000, "bulk"))
    node_a = start_node(a, "--sync-interval", "3600")
    start_node(b, "--sync-interval", "3600")
    assert run_cli(b, "federation", "add-peer", node_a.url).returncode == 0

    def open_session():
        status = json.loads(run_cli(b, "federation", "status", "--json").stdout)
        return any(c["state"] == "open" for c in status["connections"])

    wait_for(open_session, timeout=30, what="B's session with A to open")
    result = run_cli(b, "federation", "sync", "--wait", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["started"] == 1 and 0 <= doc["received"] <= len(published)
    # Every packet has arrived once --wait returns; the writer commits it a moment later.
    wait_for(lambda: published <= packet_ids(b), timeout=10, what="the caught-up packets to be stored")
