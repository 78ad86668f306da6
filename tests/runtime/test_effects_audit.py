"""Effects.write_audit ends after what was due when called, even while decisions keep coming."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ark_lattice.runtime.effects import AUDIT_CHUNK, Effects
from ark_lattice.store.events import EventKind
from ark_lattice.store.store import Store


def decision(i: int) -> dict[str, Any]:
    return {"hook": "inbound_packet", "peer": "p", "subject": f"{i:064x}", "allowed": True,
            "rules": ["r"], "reason": "allowed"}


async def test_decisions_queued_during_a_write_wait_for_the_next_call(tmp_path) -> None:
    store = await Store.open(tmp_path / "ledger.db")
    try:
        effects = Effects(store, core=SimpleNamespace(gate=None))  # type: ignore[arg-type]
        append = store.append_event
        more = iter(range(AUDIT_CHUNK, 100 * AUDIT_CHUNK))

        async def append_while_receiving(kind: str, subject: str, data: dict[str, Any]) -> Any:
            # A receiver queues a full chunk of decisions during every ledger write.
            effects.decisions.extend(decision(next(more)) for _ in range(AUDIT_CHUNK))
            return await append(kind, subject, data)

        store.append_event = append_while_receiving  # type: ignore[method-assign]
        effects.decisions.extend(decision(i) for i in range(AUDIT_CHUNK + 1))
        written = await effects.write_audit()
        # Two events were due (1,001 decisions); the call ends after them, it does not chase
        # the decisions queued meanwhile (nor hold every event it wrote until they stop).
        assert len(written) == 2
        assert [d["subject"] for d in written[0][2]["decisions"]] == [f"{i:064x}" for i in range(AUDIT_CHUNK)]
        assert len(effects.decisions) == AUDIT_CHUNK + 1  # 3,001 queued in all, 2,000 written
        store.append_event = append  # type: ignore[method-assign]
        # Stopping writes everything, and nothing is lost on the way.
        await effects.write_audit(final=True)
        assert effects.decisions == []
        events = [e for e in await store.events() if e.kind == EventKind.POLICY_DECISION]
        assert sum(len(e.fields["decisions"]) for e in events) == 3 * AUDIT_CHUNK + 1
    finally:
        await store.close()
