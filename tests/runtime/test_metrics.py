"""Metrics: what the runtime counts, the Prometheus text of it, and a real node scraped over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ark_lattice.errors import ErrorCode, UsageError
from ark_lattice.processes import cli_command, run_cli, wait_for
from ark_lattice.protocol import actions as act
from ark_lattice.runtime.effects import Driver, Effects
from ark_lattice.runtime.exposition import prometheus_text
from ark_lattice.runtime.metrics import (
    NAMES,
    Counters,
    Family,
    LinkView,
    StoreGauges,
    Traffic,
    families,
    families_from_json,
    parse_address,
    plain_text,
)

from conftest import fill, init_federation, packet_ids, set_tier
from test_hostile_peers import RoguePeer, _now

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _record(hook: str, allowed: bool) -> dict[str, Any]:
    return {"hook": hook, "peer": "p", "subject": "s", "allowed": allowed, "rules": [], "reason": ""}


def _parse(text: str) -> Samples:
    """Prometheus text → {(sample name, labels): value}, through prometheus-client's own parser."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _gauges(events: int = 3, checkpoint: float | None = None) -> StoreGauges:
    return StoreGauges(packets=10, quarantined=4, events=events, last_checkpoint=checkpoint)


# -- counting -----------------------------------------------------------------------------------


class _Recorder(Driver):
    """A driver that only records: enough to run the shared carry_out loop."""

    def __init__(self) -> None:
        self.metrics = Counters()
        decisions: list[object] = []
        self.effects = cast(Effects, SimpleNamespace(
            decisions=decisions, queue_decisions=lambda records, now: decisions.extend(records)
        ))
        self.clock = lambda: 0.0
        self.dialled: list[str] = []

    def dial(self, url: str) -> None:
        self.dialled.append(url)

    def wake_at(self, at: float) -> None:
        pass


async def test_carry_out_shows_every_action_to_the_counters_and_still_carries_it_out():
    driver = _Recorder()
    await driver.carry_out([
        act.Audit((_record("inbound_packet", True), _record("inbound_packet", True),
                  _record("inbound_packet", False), _record("query", False))),
        act.Dial("ws://x"),
        act.WakeAt(5.0),
    ])
    counters = driver.metrics
    assert counters is not None
    assert counters.decisions == {("inbound_packet", "allow"): 2, ("inbound_packet", "deny"): 1,
                                  ("query", "deny"): 1}
    assert driver.dialled == ["ws://x"] and len(driver.effects.decisions) == 4  # carried out as before
    counters.saw(act.Strike(1, None, "1.2.3.4:5", ErrorCode.MALFORMED, "junk", True))
    counters.saw(act.Strike(1, "peer", "peer", ErrorCode.BAD_PACKET, "bad", False))
    counters.saw(act.Isolate("peer", "too many strikes"))
    assert (counters.strikes, counters.isolations) == (2, 1)


def test_traffic_by_tier_never_goes_down_across_tier_changes_and_link_ends():
    counters = Counters()

    def received(links: list[LinkView]) -> dict[str, int]:
        return {tier: t.packets_in for tier, t in counters.traffic(links).items()}

    # The handshake runs before the peer's tier is known.
    assert received([LinkView(1, "none", "handshake", Traffic(0, 0, 100, 100))]) == {"none": 0}
    handshake = LinkView(1, "none", "handshake", Traffic(0, 0, 100, 100))
    assert counters.traffic([handshake])["none"].bytes_in == 100
    # Admitted as core: what came since counts under core, the handshake stays under none.
    assert received([LinkView(1, "core", "open", Traffic(5, 0, 600, 150))]) == {"none": 0, "core": 5}
    traffic = counters.traffic([LinkView(1, "core", "open", Traffic(5, 0, 600, 150))])
    assert (traffic["none"].bytes_in, traffic["core"].bytes_in) == (100, 500)
    # Blocked for its strikes: core keeps its 7, blocked counts from here.
    assert received([LinkView(1, "core", "open", Traffic(7, 0, 700, 150))]) == {"none": 0, "core": 7}
    assert received([LinkView(1, "blocked", "open", Traffic(9, 0, 800, 150))]) == {
        "none": 0, "core": 7, "blocked": 2,
    }
    # The link ends; a second one, never seen by a snapshot before it ended, comes and goes.
    counters.link_ended(1, "blocked", Traffic(10, 0, 900, 160))
    counters.link_ended(2, "sandbox", Traffic(3, 1, 50, 40))
    assert received([]) == {"none": 0, "core": 7, "blocked": 3, "sandbox": 3}
    total = counters.traffic([])
    assert sum(t.bytes_in for t in total.values()) == 900 + 50


def test_a_reported_tier_change_keeps_each_packet_with_the_tier_of_its_moment():
    counters = Counters()
    counters.retiered(1, "none", "sandbox", Traffic(0, 0, 300, 300))  # admitted
    counters.retiered(1, "sandbox", "blocked", Traffic(1, 0, 500, 350))  # isolated; no snapshot between
    total = counters.traffic([LinkView(1, "blocked", "closed", Traffic(1, 0, 520, 400))])
    assert {tier: t.packets_in for tier, t in total.items()} == {"none": 0, "sandbox": 1, "blocked": 0}
    assert (total["none"].bytes_in, total["sandbox"].bytes_in, total["blocked"].bytes_in) == (300, 200, 20)
    counters.link_ended(1, "blocked", Traffic(1, 0, 530, 400))
    assert counters.traffic([])["blocked"].bytes_in == 30


def test_sessions_by_tier_and_state_keep_a_seen_pair_at_zero():
    counters = Counters()
    links = [LinkView(1, "core", "open", Traffic()), LinkView(2, "none", "handshake", Traffic()),
             LinkView(3, "core", "open", Traffic())]
    assert counters.sessions(links) == {("core", "open"): 2, ("none", "handshake"): 1}
    assert counters.sessions(links[:1]) == {("core", "open"): 1, ("none", "handshake"): 0}


def test_the_metric_set_has_every_name_and_prometheus_text_carries_the_values():
    counters = Counters(started=100.0)
    counters.saw(act.Audit((_record("outbound_packet", True),)))
    counters.dialled(connected=True)
    counters.dialled(connected=False)
    counters.dialled(connected=False)
    counters.stored(7, quarantined=False)
    counters.stored(0, quarantined=True)
    counters.synced("initiator")
    links = [LinkView(1, "core", "open", Traffic(7, 2, 9000, 800))]
    fams = families(counters, links, _gauges(checkpoint=1000.0), now=1012.5, monotonic=160.0)
    assert [f.name for f in fams] == list(NAMES)
    text = prometheus_text(fams).decode()
    samples = _parse(text)
    assert _get(samples, "ark_lattice_up") == 1
    assert _get(samples, "ark_lattice_uptime_seconds") == 60.0
    assert _get(samples, "ark_lattice_sessions", tier="core", state="open") == 1
    assert _get(samples, "ark_lattice_packets_received_total", tier="core") == 7
    assert _get(samples, "ark_lattice_packets_sent_total", tier="core") == 2
    assert _get(samples, "ark_lattice_bytes_received_total", tier="core") == 9000
    assert _get(samples, "ark_lattice_bytes_sent_total", tier="core") == 800
    assert _get(samples, "ark_lattice_reconciliations_total", role="initiator") == 1
    assert _get(samples, "ark_lattice_reconciliations_total", role="responder") == 0
    assert _get(samples, "ark_lattice_packets_stored", state="shared") == 6
    assert _get(samples, "ark_lattice_packets_stored", state="quarantined") == 4
    assert _get(samples, "ark_lattice_packets_ingested_total", state="shared") == 7
    assert _get(samples, "ark_lattice_packets_ingested_total", state="quarantined") == 0
    assert _get(samples, "ark_lattice_policy_decisions_total", hook="outbound_packet", effect="allow") == 1
    assert _get(samples, "ark_lattice_strikes_total") == 0
    assert _get(samples, "ark_lattice_isolations_total") == 0
    assert _get(samples, "ark_lattice_dials_total", result="connected") == 1
    assert _get(samples, "ark_lattice_dials_total", result="failed") == 2
    assert _get(samples, "ark_lattice_ledger_events") == 3
    assert _get(samples, "ark_lattice_checkpoint_age_seconds") == 12.5
    assert "# TYPE ark_lattice_strikes_total counter" in text
    assert "# TYPE ark_lattice_packets_stored gauge" in text
    # Without a checkpoint the family is there with no sample (absent, not NaN).
    bare = prometheus_text(families(Counters(), [], _gauges(), now=0.0)).decode()
    assert "# TYPE ark_lattice_checkpoint_age_seconds gauge" in bare
    assert not any(line.startswith("ark_lattice_checkpoint_age_seconds") for line in bare.splitlines())
    # The JSON snapshot and the plain listing (no prometheus-client) say the same.
    again = families_from_json(json.loads(json.dumps([f.to_json() for f in fams])))
    assert again == fams
    plain = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in plain_text(again).splitlines()}
    assert plain == {
        name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}" if labels else ""): value
        for (name, labels), value in samples.items()
    }
    assert Family.from_json(fams[2].to_json()).value(tier="core", state="open") == 1


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:9467", ("127.0.0.1", 9467)),
        ("0.0.0.0:9467", ("0.0.0.0", 9467)),
        ("[::1]:9467", ("::1", 9467)),
        (":9467", ("127.0.0.1", 9467)),
        ("9467", ("127.0.0.1", 9467)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_metrics_addresses(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "nonsense", "host:", "host:port", "1.2.3.4:70000", "::1:9467", "[::1]"])
def test_metrics_addresses_that_do_not_parse(text):
    with pytest.raises(UsageError, match="--metrics takes HOST:PORT"):
        parse_address(text)


# -- the command line ------------------------------------------------------------------------


def _without_prometheus(tmp: Path) -> dict[str, str]:
    """An environment whose Python cannot import prometheus_client (a missing extra)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys

        class _Missing:
            def find_spec(self, name, path=None, target=None):
                if name == "prometheus_client" or name.startswith("prometheus_client."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, _Missing())
    """))
    path = os.pathsep.join(p for p in (str(tmp), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def test_metrics_without_the_extra_is_one_sentence_and_exit_2(homes):
    home = homes("a")
    env = _without_prometheus(homes("blocker"))
    probe = subprocess.run(
        [cli_command(None)[0], "-c", "import prometheus_client"], env=env, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "No module named 'prometheus_client'" in probe.stderr
    result = subprocess.run(
        cli_command(home, "federation", "start", "--port", "0", "--metrics", "127.0.0.1:9467"),
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "error: --metrics needs the metrics extra: pip install 'ark-lattice[metrics]'\n"
    )
    assert not home.exists()  # refused before the node was created, let alone started


def test_metrics_addresses_that_cannot_be_used_stop_the_start(homes):
    bad = run_cli(homes("a"), "federation", "start", "--port", "0", "--metrics", "localhost:http")
    assert bad.returncode == 2
    assert bad.stderr.decode() == (
        "error: --metrics takes HOST:PORT such as 127.0.0.1:9467, not 'localhost:http'\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli(homes("b"), "federation", "start", "--port", "0", "--bind", "127.0.0.1",
                       "--no-mdns", "--no-multicast", "--metrics", f"127.0.0.1:{port}")
    err = busy.stderr.decode().strip().splitlines()
    assert busy.returncode == 2
    assert err[-1] == f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    assert "Traceback" not in busy.stderr.decode() and "listening on" not in busy.stderr.decode()
    assert not (homes("b") / "control.sock").exists()


# -- a real node ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return _parse(response.read().decode())


def _metrics_json(home: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(cli_command(home, "federation", "metrics", "--json"),
                            capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return cast(dict[str, Any], json.loads(result.stdout))


def _value(doc: dict[str, Any], name: str, **labels: str) -> float | None:
    for fam in families_from_json(doc["metrics"]):
        if fam.name == name:
            return fam.value(**labels)
    raise AssertionError(f"no family {name}")


def test_a_scraped_node_shows_the_counters_of_a_sync(homes, start_node):
    count = 300
    ids = init_federation(homes, "a", "b")
    a, b = homes("a"), homes("b")
    set_tier(a, ids["b"], "core")
    set_tier(b, ids["a"], "core")
    fill(a, count, "from/a")
    node_a = start_node(a, "--anchor-interval", "0.2")
    port = _free_port()
    start_node(b, "--metrics", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"

    before = _scrape(url)
    assert _get(before, "ark_lattice_up") == 1
    assert _get(before, "ark_lattice_packets_received_total", tier="core") is None  # no session yet
    assert _get(before, "ark_lattice_dials_total", result="connected") == 0
    with pytest.raises(urllib.error.HTTPError) as not_there:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
    assert not_there.value.code == 404

    assert run_cli(b, "federation", "add-peer", node_a.url).returncode == 0
    wait_for(lambda: len(packet_ids(b)) == count, timeout=60, what="the sync")

    def settled() -> Samples | None:  # the counters follow the store within a moment
        s = _scrape(url)
        stored = _get(s, "ark_lattice_packets_ingested_total", state="shared") == count
        synced = (_get(s, "ark_lattice_reconciliations_total", role="initiator") or 0) >= 1
        return s if stored and synced else None

    after = wait_for(settled, timeout=30, what="the counters of the sync")
    assert _get(after, "ark_lattice_packets_received_total", tier="core") == count
    assert _get(after, "ark_lattice_packets_sent_total", tier="core") == 0
    assert (_get(after, "ark_lattice_bytes_received_total", tier="core") or 0) > count * 64
    assert (_get(after, "ark_lattice_bytes_sent_total", tier="core") or 0) > 0
    assert _get(after, "ark_lattice_sessions", tier="core", state="open") == 1
    assert _get(after, "ark_lattice_packets_stored", state="shared") == count
    assert _get(after, "ark_lattice_packets_stored", state="quarantined") == 0
    assert _get(after, "ark_lattice_policy_decisions_total", hook="inbound_packet", effect="allow") == count
    assert _get(after, "ark_lattice_policy_decisions_total", hook="inbound_packet", effect="deny") is None
    assert _get(after, "ark_lattice_dials_total", result="connected") == 1
    assert _get(after, "ark_lattice_strikes_total") == 0
    assert (_get(after, "ark_lattice_ledger_events") or 0) > 0
    assert _get(after, "ark_lattice_checkpoint_age_seconds") is None  # anchors every 300 s: none yet
    uptime = _get(after, "ark_lattice_uptime_seconds") or 0
    assert uptime > (_get(before, "ark_lattice_uptime_seconds") or 0)

    # `federation metrics` asks the node over its control socket: the same set, no scraper.
    doc = _metrics_json(b)
    assert doc["endpoint"] == url
    assert _value(doc, "ark_lattice_packets_received_total", tier="core") == count
    assert _value(doc, "ark_lattice_sessions", tier="core", state="open") == 1
    assert _value(doc, "ark_lattice_policy_decisions_total", hook="inbound_packet", effect="allow") == count
    text = run_cli(b, "federation", "metrics").stdout.decode()
    assert f'ark_lattice_packets_received_total{{tier="core"}} {count}.0' in text.splitlines()
    plain = subprocess.run(cli_command(b, "federation", "metrics"), capture_output=True, text=True,
                           env=_without_prometheus(homes("blocker")), timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert f'ark_lattice_packets_received_total{{tier="core"}} {count}' in plain.stdout.splitlines()

    # The sender, without --metrics, answers `federation metrics` too; it anchors every 0.2 s.
    def sender() -> dict[str, Any] | None:
        doc = _metrics_json(a)
        return doc if _value(doc, "ark_lattice_checkpoint_age_seconds") is not None else None

    sent = wait_for(sender, timeout=30, what="a checkpoint on the sender")
    assert sent["endpoint"] is None
    assert _value(sent, "ark_lattice_packets_sent_total", tier="core") == count
    assert _value(sent, "ark_lattice_policy_decisions_total", hook="outbound_packet", effect="allow") == count
    assert 0 <= (_value(sent, "ark_lattice_checkpoint_age_seconds") or -1) < 30

    # The peer goes away: the session gauge drops to 0, the counters keep what the session carried.
    node_a.stop()

    def ended() -> Samples | None:
        s = _scrape(url)
        return s if _get(s, "ark_lattice_sessions", tier="core", state="open") == 0 else None

    gone = wait_for(ended, timeout=30, what="the session to end")
    assert _get(gone, "ark_lattice_packets_received_total", tier="core") == count
    assert (_get(gone, "ark_lattice_bytes_received_total", tier="core") or 0) >= (
        _get(after, "ark_lattice_bytes_received_total", tier="core") or 0
    )


def test_strikes_isolations_and_quarantine_are_counted(homes, start_node):
    """A sandbox peer sends one good packet and forged ones until it is isolated."""
    from ark_lattice.hlc import pack
    from ark_lattice.identity import Identity
    from ark_lattice.packet import Packet
    from ark_lattice.protocol.frames import PacketsFrame, WirePacket

    init_federation(homes, "h")
    h = homes("h")
    port = _free_port()
    node = start_node(h, "--metrics", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/metrics"
    identity = Identity.generate()
    set_tier(h, str(identity.node_id), "sandbox")  # its packets are kept, quarantined

    async def go() -> None:
        peer = await RoguePeer((h / "federation.key").read_bytes(), identity).connect(node.url)
        stamp = pack(int(_now() * 1000), 0)
        good = Packet.create(peer.identity, topic="t", kind="note", body=b"good", created_at=stamp)
        bad = Packet.create(peer.identity, topic="t", kind="note", body=b"bad", created_at=stamp + 1)
        forged = WirePacket(bad.header_bytes, bytes(64), bad.body)
        first = WirePacket(good.header_bytes, good.signature, good.body)
        await peer.send_frame(PacketsFrame((first,), live=True))
        for _ in range(5):  # the default policy isolates at five strikes
            await peer.send_frame(PacketsFrame((forged,), live=True))
        await peer.closed_code()

    asyncio.run(go())

    def counted() -> Samples | None:
        s = _scrape(url)
        return s if _get(s, "ark_lattice_isolations_total") == 1 else None

    samples = wait_for(counted, timeout=30, what="the isolation to be counted")
    assert (_get(samples, "ark_lattice_strikes_total") or 0) >= 5
    assert _get(samples, "ark_lattice_packets_ingested_total", state="quarantined") == 1
    assert _get(samples, "ark_lattice_packets_ingested_total", state="shared") == 0
    assert _get(samples, "ark_lattice_packets_stored", state="quarantined") == 1
    assert _get(samples, "ark_lattice_packets_received_total", tier="sandbox") == 1
    assert _get(samples, "ark_lattice_policy_decisions_total", hook="tier_change", effect="allow") == 1
    assert not any(v for (name, _), v in samples.items() if name == "ark_lattice_sessions")  # closed
