"""The simulator's own parts: the inline store connection, virtual time, the virtual network and
the expected-holdings computation (checked against brute force)."""

import random
from pathlib import Path
from typing import Any

import pytest

from ark_lattice.identity import Identity
from ark_lattice.ledger import verify
from ark_lattice.packet import Packet
from ark_lattice.sim.clock import Scheduler
from ark_lattice.sim.convergence import FlowGraph, merkle_root
from ark_lattice.sim.network import Host, Network, Socket
from ark_lattice.store import inline
from ark_lattice.store.store import Store
from ark_lattice.tiers import TrustTier

AUTHOR = Identity.from_seed(bytes(32))


def run(coro):
    return inline.run(coro)


# -- store over the inline connection --------------------------------------------------------


def test_a_store_on_the_inline_connection_is_a_real_verifiable_ledger():
    async def go():
        store = await Store.open(Path(":memory:"), clock=lambda: 1_767_225_600.0, connect=inline.connect)
        store.set_signer(AUTHOR)  # as a simulated node does: every write ends with a signed head
        packets = [
            Packet.create(AUTHOR, topic="t", kind="note", body=b"%d" % i, created_at=i + 1) for i in range(5)
        ]
        assert len(await store.put_packets(packets)) == 5
        await store.add_peer("a" * 52, tier=TrustTier.CORE, endpoints=["sim://x"])
        with pytest.raises(RuntimeError):
            async with store.transaction():
                extra = Packet.create(AUTHOR, topic="t", kind="note", body=b"x", created_at=99)
                await store.put_packets([extra])
                raise RuntimeError("rolled back")
        assert await store.packet_count() == 5
        rows = [r async for r in store.iter_rows("SELECT id FROM packets ORDER BY id")]
        assert [r[0] for r in rows] == sorted(p.id for p in packets)
        report = await verify(store, AUTHOR.node_id, owner=False)  # no `init` in the simulator
        assert report.packets == 5
        await store.close()

    run(go())


def test_an_inline_run_that_would_wait_is_a_bug_reported_as_one():
    import types

    @types.coroutine
    def something_outside():
        yield  # what awaiting a socket or a timer comes down to

    async def waits():
        await something_outside()

    with pytest.raises(RuntimeError, match="not an inline statement"):
        inline.run(waits())


# -- virtual time ----------------------------------------------------------------------------


def test_virtual_time_jumps_to_the_next_timer_and_orders_by_it():
    clock = Scheduler()
    seen: list[tuple[str, float]] = []
    for name, at in (("late", 3600), ("early", 0.5), ("mid", 60), ("mid-again", 60)):
        clock.call_at(at, lambda n: seen.append((n, clock.time())), name)
    clock.run_until(100)
    assert seen == [("early", 0.5), ("mid", 60), ("mid-again", 60)]  # same time: scheduling order
    assert clock.time() == 100
    clock.run_until(10_000)
    assert seen[-1] == ("late", 3600) and clock.time() == 10_000


def test_timers_scheduled_by_timers_run_in_the_same_run_and_cancelled_ones_never():
    clock = Scheduler()
    seen: list[str] = []
    dropped = clock.call_at(2, seen.append, "cancelled")
    clock.call_at(1, lambda: clock.call_later(0.5, seen.append, "chained"))
    clock.call_at(5, seen.append, "past")
    dropped.cancel()
    clock.run_until(3)
    assert seen == ["chained"] and clock.pending() == 1
    clock.call_at(0, seen.append, "at once")  # a time in the past means now
    clock.run_until(3)
    assert seen == ["chained", "at once"]


# -- the network -----------------------------------------------------------------------------


class _End:
    """One side's callbacks, recording what arrives and when."""

    def __init__(self, clock):
        self.clock = clock
        self.got = []
        self.closed = None

    def bind(self, sock):
        sock.bind(lambda data: self.got.append((data, self.clock.time())), self._close)
        return self

    def _close(self, code, reason):
        self.closed = (code, reason, self.clock.time())


def _pair(loss=0.0, latency=(10.0, 10.0)):
    clock = Scheduler()
    net = Network(clock, random.Random(1), lambda a, b: (latency, loss))
    accepted: list[Socket] = []
    a = Host("a", "g", "sim://a", lambda s: None)
    b = Host("b", "g", "sim://b", accepted.append)
    for h in (a, b):
        h.up = True
        net.add(h)
    return clock, net, a, b, accepted


def _dial(clock, net, a, url="sim://b"):
    result: dict[str, Any] = {}
    net.dial(a, url, lambda s: result.setdefault("sock", s), lambda why: result.setdefault("failed", why))
    return result


def test_messages_arrive_in_order_after_the_latency_even_with_loss():
    clock, net, a, b, accepted = _pair(loss=0.3)
    dialled = _dial(clock, net, a)
    clock.run_until(1)
    ours = dialled["sock"]
    theirs = _End(clock).bind(accepted[0])
    assert dialled and clock.time() == 1
    for i in range(200):
        assert ours.send(b"%d" % i)
    ours.close()
    clock.run_until(1000)
    assert [m for m, _ in theirs.got] == [b"%d" % i for i in range(200)]
    assert all(at >= 1.01 for _, at in theirs.got)
    assert theirs.closed is not None and theirs.closed[0] == 1000
    assert net.traffic.retransmissions > 0
    assert net.traffic.messages == 200


def test_a_connection_takes_one_round_trip():
    clock, net, a, b, accepted = _pair()
    seen = []
    net.dial(a, "sim://b", lambda sock: seen.append(clock.time()), seen.append)
    clock.run_until(5)
    assert seen == [pytest.approx(0.02)] and accepted


def test_a_partition_holds_messages_until_it_heals_and_dials_across_it_time_out():
    clock, net, a, b, accepted = _pair()
    dialled = _dial(clock, net, a)
    clock.run_until(1)
    theirs = _End(clock).bind(accepted[0])
    net.partition({"a": 0, "b": 1})
    dialled["sock"].send(b"held")
    clock.run_until(30)
    assert net.held_messages() == 1 and not theirs.got
    again = _dial(clock, net, a)
    clock.run_until(39.9)
    assert again == {}
    clock.run_until(40)
    assert "timed out" in again["failed"]
    net.heal()
    clock.run_until(41)
    assert theirs.got == [(b"held", pytest.approx(40.01))]  # held until the heal, then one latency


def test_dialling_a_crashed_host_is_refused_and_a_crash_resets_its_connections():
    clock, net, a, b, accepted = _pair()
    dialled = _dial(clock, net, a)
    clock.run_until(1)
    ours = _End(clock).bind(dialled["sock"])
    b.up = False
    net.sever(b)
    clock.run_until(2)
    assert ours.got == [] and ours.closed == (1006, "connection reset", pytest.approx(1.01))
    assert not dialled["sock"].send(b"late")
    refused = _dial(clock, net, a)
    clock.run_until(3)
    assert "refused" in refused["failed"]
    assert "cannot resolve" in _dial(clock, net, a, "sim://nowhere")["failed"]


def test_what_arrives_before_a_node_binds_waits_for_it():
    clock, net, a, b, accepted = _pair()
    dialled = _dial(clock, net, a)
    clock.run_until(1)
    dialled["sock"].send(b"early")
    clock.run_until(2)
    theirs = _End(clock).bind(accepted[0])
    assert [m for m, _ in theirs.got] == [b"early"]


# -- expected holdings -----------------------------------------------------------------------


def _brute_force(n, carry, terminal, holdings, gone):
    out = []
    for w in range(n):
        if w in gone:
            out.append(0)
            continue
        bits = 0
        for s in range(n):
            if s in gone:
                continue
            # s reaches w over carry edges (through nodes still there), then maybe one terminal edge
            seen, stack = {s}, [s]
            while stack:
                u = stack.pop()
                for v in carry[u]:
                    if v not in seen and v not in gone:
                        seen.add(v)
                        stack.append(v)
            if w in seen or any(w in terminal[u] for u in seen):
                bits |= holdings[s]
        out.append(bits)
    return out


@pytest.mark.parametrize("seed", range(25))
def test_expected_holdings_match_brute_force_reachability(seed):
    rng = random.Random(seed)
    n = rng.randrange(1, 14)
    carry = [[rng.randrange(n) for _ in range(rng.randrange(3))] for _ in range(n)]
    terminal = [[rng.randrange(n) for _ in range(rng.randrange(2))] for _ in range(n)]
    holdings = [rng.getrandbits(6) for _ in range(n)]
    graph = FlowGraph(n, carry, terminal)
    assert graph.expected(holdings) == _brute_force(n, carry, terminal, holdings, set())
    gone = set(rng.sample(range(n), rng.randrange(n)))
    for g in sorted(gone):
        graph.remove(g)
    assert graph.expected(holdings) == _brute_force(n, carry, terminal, holdings, gone)


def test_the_merkle_root_is_rfc6962_over_sorted_ids():
    from ark_lattice.merkle import leaf_hash, root

    ids = [bytes([i]) * 32 for i in (3, 1, 2)]
    assert merkle_root(ids) == root([leaf_hash(i) for i in sorted(ids)])
    assert merkle_root([]) == root([])
