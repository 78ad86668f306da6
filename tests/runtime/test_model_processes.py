"""Real node processes: three core nodes submit updates, one aggregates and publishes, the others verify."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ark_lattice.processes import NodeProcess, run_cli, wait_for

from conftest import init_federation, packet_ids, set_tier


def test_three_core_nodes_submit_one_aggregates_the_others_verify(
    homes: Callable[[str], Path], start_node: Callable[..., NodeProcess]
) -> None:
    names = ("a", "b", "c")
    ids = init_federation(homes, *names)
    for me in names:
        for other in names:
            if other != me:
                set_tier(homes(me), ids[other], "core")
    node_a, node_b, node_c = (start_node(homes(n), wait=False) for n in names)  # side by side
    for node in (node_a, node_b, node_c):
        node.wait_started()
    assert run_cli(homes("b"), "federation", "add-peer", node_a.url).returncode == 0
    assert run_cli(homes("c"), "federation", "add-peer", node_a.url).returncode == 0
    assert run_cli(homes("c"), "federation", "add-peer", node_b.url).returncode == 0

    rng = np.random.default_rng(7)
    submitted = {}
    for i, name in enumerate(names):
        path = homes(name).parent / f"{name}-update.npz"
        np.savez(path, w=rng.standard_normal((8, 4)), b=rng.standard_normal(4).astype(np.float32))
        result = run_cli(homes(name), "models", "submit", "--model", "demo", "--round", "1",
                         "--samples", str(10 * (i + 1)), str(path), "--json")
        assert result.returncode == 0, result.stderr
        submitted[name] = json.loads(result.stdout)["id"]
    updates = set(submitted.values())
    wait_for(lambda: all(updates <= packet_ids(homes(n)) for n in names), timeout=60,
             what="every node to hold every update")

    result = run_cli(homes("a"), "models", "aggregate", "--model", "demo", "--round", "1",
                     "--method", "fedavg", "--publish", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert sorted(doc["inputs"]) == sorted(updates) and doc["excluded"] == []
    model_id = doc["id"]
    wait_for(lambda: all(model_id in packet_ids(homes(n)) for n in ("b", "c")), timeout=60,
             what="the model packet to reach b and c")

    for name in ("b", "c"):
        verified = run_cli(homes(name), "models", "verify", model_id)
        assert verified.returncode == 0, verified.stderr
        assert b"verified" in verified.stdout
        result = run_cli(homes(name), "models", "list", "--model", "demo", "--json")
        listed = json.loads(result.stdout)["items"]
        assert [m["id"] for m in listed] == [model_id]
        # Every core node computes the same bytes from the same inputs.
        again = run_cli(homes(name), "models", "aggregate", "--model", "demo", "--round", "1",
                        "--method", "fedavg", "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["output_hash"] == doc["output_hash"]
