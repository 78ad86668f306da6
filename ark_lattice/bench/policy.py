"""``bench policy``: decisions/s against bare CEL, and sync ingest with the default policy on."""

from __future__ import annotations

import time

from ark_lattice.bench import SILENT, Measurement, Progress
from ark_lattice.bench import sync as bench_sync
from ark_lattice.policy import DEFAULT_POLICY_TEXT, Hook, Policy, bench_decisions

__all__ = ["run", "PERMIT_ALL"]

PERMIT_ALL = """version = 1
[limits]
strikes_to_block = 0

[[rule]]
id = "permit-all"
effect = "allow"
hooks = ["inbound_packet", "outbound_packet", "query", "tier_change", "governance"]
condition = "true"
"""


def run(decisions: int = 50_000, packets: int = 10_000, *, progress: Progress = SILENT) -> list[Measurement]:
    policy = Policy.default()
    now = int(time.time())
    inputs = {
        "now": now, "peer_id": "a" * 52, "peer_tier": "core", "strikes": 0, "rate_peer": 1.5,
        "rate_topic": 0.5, "topic": "notes/field", "kind": "note", "author": "b" * 52,
        "size": 1024, "age_s": 3,
    }
    out: list[Measurement] = []
    progress.update(total=4)
    for hook in (Hook.INBOUND_PACKET, Hook.OUTBOUND_PACKET):
        progress.update(description=f"{decisions:,} {hook.value} decisions")
        r = bench_decisions(policy, inputs, decisions, hook)
        out.append(Measurement(
            f"policy.decisions.{hook.value}", r["engine_per_s"], "decisions/s", bound=r["bare_per_s"],
            note="bound: bare cel evaluation of the same compiled conditions on the same inputs",
        ))
        progress.advance()
    rates = []
    for name, text in (("default policy", DEFAULT_POLICY_TEXT), ("permit-all", PERMIT_ALL)):
        progress.update(description=f"sync, {name}: preparing {packets:,} packets")

        def synced_so_far(held: int, name: str = name) -> None:
            progress.update(description=f"sync, {name}: {held:,}/{packets:,} packets")

        rates.append(bench_sync.run_with_policy(text, packets, synced_so_far=synced_so_far))
        progress.advance()
    with_policy, permit_all = rates
    out.append(Measurement(
        "policy.sync_ingest", with_policy, "packets/s", bound=permit_all,
        note=f"{packets} packets synced with the default policy (audited) against a permit-all policy",
    ))
    return out
