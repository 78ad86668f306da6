"""The simulator's own parts: the inline store connection, virtual time, the virtual network and
the expected-holdings computation (checked against brute force)."""

import asyncio
import random
from pathlib import Path

import pytest

from ark_lattice.identity import Identity
from ark_lattice.ledger import verify
from ark_lattice.packet import Packet
from ark_lattice.sim.clock import OWNER, SimulationStalled, VirtualTimeLoop
from ark_lattice.sim.convergence import FlowGraph, merkle_root
from ark_lattice.sim.network import Host, Network
from ark_lattice.store import inline
from ark_lattice.store.store import Store
from ark_lattice.tiers import TrustTier

AUTHOR = Identity.from_seed(bytes(32))


def run(coro_fn):
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro_fn())


# -- store over the inline connection --------------------------------------------------------


def test_a_store_on_the_inline_connection_is_a_real_verifiable_ledger():
    async def go():
        store = await Store.open(Path(":memory:"), clock=lambda: 1_767_225_600.0, connect=inline.connect)
        packets = [Packet.create(AUTHOR, topic="t", kind="note", body=b"%d" % i, created_at=i + 1) for i in range(5)]
        assert len(await store.put_packets(packets)) == 5
        await store.add_peer("a" * 52, tier=TrustTier.CORE, endpoints=["sim://x"])
        with pytest.raises(RuntimeError):
            async with store.transaction():
                await store.put_packets([Packet.create(AUTHOR, topic="t", kind="note", body=b"x", created_at=99)])
                raise RuntimeError("rolled back")
        assert await store.packet_count() == 5
        rows = [r async for r in store.iter_rows("SELECT id FROM packets ORDER BY id")]
        assert [r[0] for r in rows] == sorted(p.id for p in packets)
        report = await verify(store, AUTHOR.node_id)
        assert report.packets == 5
        await store.close()

    run(go)


# -- virtual time ----------------------------------------------------------------------------


def test_virtual_time_jumps_to_the_next_timer_and_orders_by_it():
    seen = []

    async def go():
        loop = asyncio.get_running_loop()

        async def sleeper(name, delay):
            await asyncio.sleep(delay)
            seen.append((name, loop.time()))

        await asyncio.gather(sleeper("late", 3600), sleeper("early", 0.5), sleeper("mid", 60))
        return loop.time()

    assert run(go) == 3600
    assert seen == [("early", 0.5), ("mid", 60), ("late", 3600)]


def test_a_simulation_with_nothing_left_to_wait_for_stops_with_an_error():
    async def go():
        await asyncio.get_running_loop().create_future()  # nobody will ever complete it

    with pytest.raises(SimulationStalled):
        run(go)


def test_tasks_belong_to_the_owner_of_the_context_they_were_created_in():
    class Owner:
        def __init__(self):
            self.tasks = []

        def adopt(self, task):
            self.tasks.append(task)

    owner = Owner()

    async def child():
        await asyncio.sleep(1)

    async def parent():
        await asyncio.gather(asyncio.create_task(child()), asyncio.create_task(child()))

    async def go():
        import contextvars

        ctx = contextvars.Context()
        ctx.run(OWNER.set, owner)
        await asyncio.get_running_loop().create_task(parent(), context=ctx)
        await asyncio.create_task(child())  # not the owner's

    run(go)
    assert len(owner.tasks) == 3


# -- the network -----------------------------------------------------------------------------


def _pair(loss=0.0, latency=(10.0, 10.0)):
    loop = asyncio.get_running_loop()
    net = Network(loop, random.Random(1), lambda a, b: (latency, loss))
    accepted = []
    a = Host("a", "g", "sim://a", lambda s: None)
    b = Host("b", "g", "sim://b", accepted.append)
    for h in (a, b):
        h.up = True
        net.add(h)
    return net, a, b, accepted


def test_messages_arrive_in_order_after_the_latency_even_with_loss():
    async def go():
        net, a, b, accepted = _pair(loss=0.3)
        loop = asyncio.get_running_loop()
        async with net.dialer(a)("sim://b") as ws:
            assert loop.time() == pytest.approx(0.02)  # one round trip to connect
            theirs = accepted[0]
            for i in range(200):
                await ws.send(b"%d" % i)
            await ws.close()
            got = [m async for m in theirs]
        assert got == [b"%d" % i for i in range(200)]
        assert net.traffic.retransmissions > 0
        assert net.traffic.messages == 200

    run(go)


def test_a_partition_holds_messages_until_it_heals_and_dials_across_it_time_out():
    async def go():
        net, a, b, accepted = _pair()
        loop = asyncio.get_running_loop()
        ws = await net.dialer(a)("sim://b").__aenter__()
        theirs = accepted[0]
        net.partition({"a": 0, "b": 1})
        await ws.send(b"held")
        await asyncio.sleep(30)
        assert net.held_messages() == 1 and not theirs._inbox
        with pytest.raises(TimeoutError):
            await net.dialer(a)("sim://b").__aenter__()
        net.heal()
        assert await theirs.__anext__() == b"held"
        assert loop.time() == pytest.approx(40.03)  # 10 s dial timeout, then one latency

    run(go)


def test_dialling_a_crashed_host_is_refused_and_a_crash_resets_its_connections():
    async def go():
        net, a, b, accepted = _pair()
        ws = await net.dialer(a)("sim://b").__aenter__()
        b.up = False
        net.sever(b)
        assert [m async for m in ws] == []  # the reset arrives after one latency
        with pytest.raises(ConnectionRefusedError):
            await net.dialer(a)("sim://b").__aenter__()

    run(go)


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
