"""How ``federation status`` shows a running node: once, or refreshed in place with ``--watch``.

:func:`render` and :func:`plain_line` are pure: a status snapshot (the ``status`` control
command's answer), the one before it for rates, and ``now`` in; a rich renderable or one line of
text out — no clock, no socket — so a test renders a recorded status into a fixed-size console.
:func:`watch` is the loop around them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from ark_lattice.cli.context import Application
from ark_lattice.cli.stream import emit, streaming
from ark_lattice.status import Rates, session_key, session_rates, waiting_targets
from ark_lattice.store.compaction import size_text, worth_compacting

__all__ = ["render", "render_not_running", "plain_line", "watch"]

Status = Mapping[str, Any]


def render(
    status: Status, *, now: float, previous: Status | None = None, live: bool = False
) -> RenderableType:
    """The whole view of one snapshot; ``live`` shows per-second rates (from ``previous``) where a
    one-shot view shows totals."""
    parts: list[RenderableType] = [_header(status, now), _Sessions(status, previous, now, live)]
    if waiting := waiting_targets(status):
        parts.append(_waiting(waiting, now, live))
    if status.get("pending") or status.get("foreign"):
        parts.append(_first_contact(status, now))
    if status.get("isolated"):
        parts.append(_isolated(status["isolated"], now, live))
    if status.get("quarantines"):
        parts.append(_quarantines(status["quarantines"], now))
    if status.get("alerts"):
        parts.append(_alerts(status["alerts"], now, live))
    if status.get("denials"):
        parts.append(_denials(status["denials"], now, live))
    return Group(*_spaced(parts))


def render_not_running(home: str, now: float, since: float | None) -> RenderableType:
    text = Text(f"the node in {home} is not running", style="yellow")
    if since is not None:
        text.append(f" (for {_duration(now - since)}); still watching", style="dim")
    return text


def plain_line(status: Status | None, *, now: float, previous: Status | None = None) -> str:
    """One line per refresh for a pipe or a file: ``key=value`` pairs, no colour."""
    stamp = _rfc3339(now)
    if status is None:
        return f"time={stamp} running=no"
    conns = status.get("connections", [])
    rates = session_rates(previous, status)
    fields = {
        "time": stamp,
        "node": status.get("name") or str(status.get("node_id", ""))[:8],
        "up": f"{float(status.get('uptime_s', 0)):.0f}s",
        "sessions": len(conns),
        "open": sum(1 for c in conns if c.get("state") == "open"),
    }
    for name, attr in (("pkt_in", "packets_in"), ("pkt_out", "packets_out"),
                       ("bytes_in", "bytes_in"), ("bytes_out", "bytes_out")):
        digits = 1 if name.startswith("pkt") else 0
        fields[name] = f"{sum(getattr(r, attr) for r in rates.values()):.{digits}f}/s" if rates else "-"
    ledger: Mapping[str, Any] = status.get("ledger") or {}
    checkpoint = ledger.get("checkpoint")
    fields.update(
        waiting=len(waiting_targets(status)),
        isolated=len(status.get("isolated", [])),
        quarantined_peers=len(status.get("quarantines", [])),
        alerts=len(status.get("alerts", [])),
        denials=len(status.get("denials", [])),
        events=ledger.get("events", status.get("events", 0)),
        ledger_bytes=ledger.get("bytes", "-"),
        checkpoint_age=f"{max(0.0, now - checkpoint['at']):.0f}s" if checkpoint else "-",
    )
    return " ".join(f"{k}={v}" for k, v in fields.items())


def watch(application: Application, interval: float, *, json_: bool = False) -> None:
    """Refresh until Ctrl-C: in place on a terminal, one line (or JSON object) per refresh if not.

    The node may stop and start again meanwhile: the view says so and goes on.
    """
    from ark_lattice.cli.livenode import request
    from ark_lattice.errors import NodeNotRunning

    home = str(application.home.root)
    previous: dict[str, Any] | None = None
    down_since: float | None = None

    def snapshot() -> dict[str, Any] | None:
        nonlocal down_since
        try:
            doc: dict[str, Any] = request(application, "status")
        except NodeNotRunning:
            down_since = down_since or time.time()
            return None
        down_since = None
        return doc

    console = application.console
    with streaming():
        if json_ or not console.is_terminal:
            while True:
                doc = snapshot()
                if json_:
                    from ark_lattice.cli.output import status_json

                    shown = {"running": False} if doc is None else status_json({**doc, "running": True})
                    emit(json.dumps(shown))
                else:
                    emit(plain_line(doc, now=time.time(), previous=previous))
                previous = doc
                time.sleep(interval)
        from rich.live import Live

        # Live.__exit__ puts the cursor back on Ctrl-C; the view stays on screen as it was.
        with Live(console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                doc = snapshot()
                now = time.time()
                view = (
                    render_not_running(home, now, down_since)
                    if doc is None
                    else render(doc, now=now, previous=previous, live=True)
                )
                live.update(view, refresh=True)
                previous = doc
                time.sleep(interval)


# -- private ------------------------------------------------------------------------------------


def _first_contact(status: Status, now: float) -> RenderableType:
    """Peers waiting for the operator's answer, and nodes of another federation that dialled us."""
    lines = Text()
    pending = int(status.get("pending") or 0)
    if pending:
        lines.append(f"{pending} peer(s) made first contact and wait for an answer: "
                     "`peers pending`, then `peers accept ID --tier T` or `peers deny ID`", style="bold")
    for caller in status.get("foreign") or []:
        if lines:
            lines.append("\n")
        lines.append(f"a node at {caller['address']} is in another federation: it dialled us "
                     f"{int(caller['count'])} time(s) with another federation key, "
                     f"last {_ago(now - float(caller['last_seen']))}")
    return lines



def _header(status: Status, now: float) -> RenderableType:
    ledger: Mapping[str, Any] = status.get("ledger") or {}
    lines = Text()
    lines.append(str(status.get("name") or "(unnamed)"), style="bold")
    lines.append(f"  {status.get('node_id', '')}\n")
    up = _duration(float(status.get("uptime_s", 0)))
    lines.append(f"up {up}, listening on {status.get('listen', '?')}")
    if status.get("auto_sync"):
        lines.append(f", auto-sync every {_duration(float(status.get('sync_interval', 0)))}")
    else:
        lines.append(", auto-sync off")
    events = int(ledger.get("events", status.get("events", 0)))
    lines.append(f"\n{status.get('packets', 0):,} packets ({status.get('quarantined', 0):,} quarantined), ")
    lines.append(f"{status.get('peers', 0):,} peers; ledger {events:,} events")
    if "bytes" in ledger:
        lines.append(f", {size_text(int(ledger['bytes']))}")
        free = int(ledger.get("free_bytes", 0))
        if worth_compacting(free, int(ledger["bytes"])):  # only when worth a command, never as noise
            lines.append(f" ({size_text(free)} free pages: ledger compact)")
    checkpoint = ledger.get("checkpoint")
    if checkpoint:
        age = _ago(now - float(checkpoint["at"]))
        lines.append(f", last checkpoint {age} at {int(checkpoint['size']):,} events")
    elif "checkpoint" in ledger:
        lines.append(", no checkpoint yet")
    return lines


class _Sessions:
    """The sessions table; the last error of each is a column on a wide console (120 columns or
    more) and a table of its own below on a narrower one."""

    WIDE = 120

    def __init__(self, status: Status, previous: Status | None, now: float, live: bool) -> None:
        conns: Sequence[Mapping[str, Any]] = status.get("connections", [])
        self.conns = sorted(conns, key=lambda c: (c.get("peer") is None, _who(c)))
        self.rates = session_rates(previous, status) if live else {}
        self.now, self.live = now, live

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not self.conns:
            yield Text("no sessions", style="dim")
            return
        wide = options.max_width >= self.WIDE
        yield self._table(errors=wide)
        failed = [c for c in self.conns if c.get("last_error")]
        if failed and not wide:
            table = _table("last errors")
            for col in ("peer", "when"):
                table.add_column(col, no_wrap=True)
            _last_column(table, "error", self.live)
            for conn in failed:
                table.add_row(_who(conn), self._when(conn), str(conn["last_error"]))
            yield Text("")
            yield table

    def _table(self, *, errors: bool) -> Table:
        live = self.live
        table = _table("sessions")
        for head in ("peer", "tier", "state"):
            table.add_column(head, no_wrap=True)
        heads = ("packets/s in/out", "bytes/s in/out") if live else ("packets in/out", "bytes in/out")
        for head in heads:
            table.add_column(head, justify="right", no_wrap=live)
        table.add_column("last sync", no_wrap=True)
        if errors:
            _last_column(table, "last error", live)
        for conn in self.conns:
            if live:
                flows = _rate_cells(self.rates.get(session_key(conn)))
            else:
                flows = (
                    f"{int(conn.get('packets_in', 0)):,} / {int(conn.get('packets_out', 0)):,}",
                    f"{size_text(int(conn.get('bytes_in', 0)))} / {size_text(int(conn.get('bytes_out', 0)))}",
                )
            row = [
                _who(conn),
                str(conn.get("tier") or "-"),
                str(conn.get("state") or "?"),
                *flows,
                _ago(self.now - conn["last_sync"]) if conn.get("last_sync") else "never",
            ]
            if errors:
                error = conn.get("last_error")
                row.append(f"{self._when(conn)}: {error}" if error else "-")
            table.add_row(*row)
        return table

    def _when(self, conn: Mapping[str, Any]) -> str:
        at = conn.get("last_error_at")
        return _ago(self.now - float(at)) if at else "-"


def _who(conn: Mapping[str, Any]) -> str:
    """A session's peer, short; its remote address while the handshake has not named the peer."""
    return str(conn["peer"])[:12] if conn.get("peer") else str(conn.get("remote") or "?")


def _rate_cells(rate: Rates | None) -> tuple[str, str]:
    if rate is None:
        return ("- / -", "- / -")
    return (
        f"{rate.packets_in:.1f} / {rate.packets_out:.1f}",
        f"{size_text(round(rate.bytes_in))} / {size_text(round(rate.bytes_out))}",
    )


def _waiting(targets: Sequence[Mapping[str, Any]], now: float, live: bool) -> RenderableType:
    table = _table("not connected")
    for col in ("address", "dials", "failures", "next try"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("dials", "failures") else "left")
    _last_column(table, "reason", live)
    for target in targets:
        wait = float(target.get("next_attempt", 0)) - now
        table.add_row(
            str(target.get("url", "?")),
            str(target.get("dials", 0)),
            str(target.get("failures", 0)),
            f"in {_duration(wait)}" if wait >= 1 else "now",
            str(target["reason"]),
        )
    return table


def _isolated(rows: Sequence[Mapping[str, Any]], now: float, live: bool) -> RenderableType:
    table = _table("isolated peers")
    for col in ("peer", "strikes", "since"):
        table.add_column(col, no_wrap=True)
    _last_column(table, "last strike", live)
    for row in rows:
        table.add_row(
            str(row.get("peer", "?"))[:12],
            str(row.get("strikes", "?")),
            _ago(now - float(row["at"])) if row.get("at") else "-",
            str(row.get("last", "")),
        )
    return table


def _alerts(rows: Sequence[Mapping[str, Any]], now: float, live: bool) -> RenderableType:
    """The newest alerts the node holds (`alerts list --follow` shows them as they come)."""
    table = _table("recent alerts")
    for col in ("when", "severity", "author", "about"):
        table.add_column(col, no_wrap=True)
    _last_column(table, "message", live)
    for row in rows:
        received = row.get("received_at")
        table.add_row(
            _ago(now - int(received) / 1000) if received else "-",
            str(row.get("severity", "?")),
            str(row.get("author", ""))[:8],
            str(row.get("about") or "-")[:8],
            # Another node's words: plain text, never console markup.
            Text(" ".join(str(row.get("message") or row.get("error") or "").split())),
        )
    return table


def _quarantines(rows: Sequence[Mapping[str, Any]], now: float) -> RenderableType:
    """Peers an alert accused: held until the quarantine ends, unless proven (`peers lift ID`)."""
    table = _table("quarantined peers (alerts)")
    for col in ("peer", "accusers", "alerts", "ends in"):
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(
            str(row.get("peer", "?"))[:12],
            str(len(row.get("accusers", []))),
            str(len(row.get("alerts", []))),
            _duration(max(0.0, float(row.get("until", now)) - now)),
        )
    return table


def _denials(rows: Sequence[Mapping[str, Any]], now: float, live: bool) -> RenderableType:
    table = _table("recent policy denials")
    # The subject (a packet id, a topic, a tier) is left to `ark-lattice audit`: the reason says more.
    for col in ("when", "hook", "peer"):
        table.add_column(col, no_wrap=True)
    table.add_column("rules", no_wrap=live, overflow="fold")
    _last_column(table, "reason", live)
    for row in rows:
        table.add_row(
            _ago(now - int(row.get("ts", 0)) / 1000),
            str(row.get("hook", "?")),
            str(row.get("peer", ""))[:12] or "-",
            ", ".join(str(r) for r in row.get("rules") or []) or "-",
            str(row.get("reason") or "-"),
        )
    return table


def _spaced(parts: Sequence[RenderableType]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for part in parts:
        out += [Text(""), part] if out else [part]
    return out


def _table(title: str) -> Table:
    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        show_edge=False,
        expand=True,
    )


def _last_column(table: Table, header: str, live: bool) -> None:
    # The free-text column takes what is left: one line per row in place (cut with an ellipsis),
    # the whole text when printed once.
    if live:
        table.add_column(header, overflow="ellipsis", no_wrap=True, ratio=1)
    else:
        table.add_column(header, overflow="fold", min_width=16)


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 1 else f"{_duration(seconds)} ago"


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
