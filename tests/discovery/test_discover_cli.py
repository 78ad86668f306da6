"""`federation discover` and the discovery switches on a node that is not on any LAN."""

import json

from ark_lattice.processes import run_cli


def test_a_loopback_node_announces_nothing_and_says_why(homes, start_node):
    home = homes("a")
    start_node(home)  # conftest binds 127.0.0.1
    result = run_cli(home, "federation", "discover", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["running"] is True and doc["seen"] == [] and doc["announcing"] == []
    assert doc["mdns"] == doc["beacon"] == "off: bound to the loopback address 127.0.0.1"
    human = run_cli(home, "federation", "discover").stdout.decode()
    assert "from the running node" in human and "nothing heard" in human


def test_switched_off_carriers_are_reported_off(homes, start_node):
    home = homes("a")
    start_node(home, "--no-mdns", "--no-multicast")
    doc = json.loads(run_cli(home, "federation", "discover", "--json").stdout)
    assert doc["mdns"] == "off" and doc["beacon"] == "off"


def test_a_bad_beacon_group_is_one_clear_error(homes):
    for group in ("10.0.0.1", "nonsense"):
        result = run_cli(homes("a"), "federation", "start", "--beacon-group", group)
        assert result.returncode == 2
        assert "not an IPv4 multicast group" in result.stderr.decode()
        assert "Traceback" not in result.stderr.decode()
