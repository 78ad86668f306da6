"""`federation status` on a node with packets: the same fields as before, each from a cheap read."""

from ark_lattice.processes import run_cli

FIELDS = {
    "now", "node_id", "name", "version", "uptime_s", "listen", "packets", "quarantined", "peers", "events",
    "connections", "strangers", "auto_sync", "sync_interval", "isolated", "quarantines", "dialling",
    "pending", "foreign", "denials", "alerts", "ledger", "store_access", "policy", "published", "control",
    "running",
}


def test_status_keeps_its_fields_and_counts(homes, start_node):
    home = homes("a")
    assert run_cli(home, "init").returncode == 0
    for i in range(3):
        assert run_cli(home, "packets", "publish", "--topic", "t", "-", input=b"%d" % i).returncode == 0
    assert run_cli(home, "alerts", "raise", "--severity", "info", "status test").returncode == 0
    node = start_node(home, "--no-mdns", "--no-multicast")
    status = node.current_status()
    assert status is not None and set(status) == FIELDS
    assert (status["packets"], status["quarantined"], status["pending"]) == (4, 0, 0)
    assert status["events"] == status["ledger"]["events"] >= 5  # init, 3 packets, the alert
    assert set(status["ledger"]) == {"events", "bytes", "free_bytes", "checkpoint"}
    assert 0 <= status["ledger"]["free_bytes"] < status["ledger"]["bytes"]
    [alert] = status["alerts"]
    assert alert["message"] == "status test"
    assert status["denials"] == [] and status["connections"] == []
