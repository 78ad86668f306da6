"""Scenarios: what a simulated federation looks like and what happens to it, epoch by epoch.

A scenario is a JSON document (docs/simulator.md lists every field): node groups with their
network profile, the trust tier each group gives each other group, a topology, a publish workload
and faults by epoch. :meth:`Scenario.from_json` checks all of it up front and names the offending
field in a :class:`~ark_lattice.errors.ConfigError`, so a typo never surfaces as a strange run.
Built-in scenarios are JSON files beside this module (``scenarios/``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ark_lattice.errors import ConfigError, UsageError
from ark_lattice.packet import check_topic
from ark_lattice.tiers import TrustTier

__all__ = [
    "Scenario",
    "Group",
    "LinkProfile",
    "Workload",
    "Fault",
    "Selection",
    "builtin_names",
    "load_scenario",
    "MAX_NODES",
]

MAX_NODES = 10_000
FAULT_KINDS = ("partition", "heal", "crash", "restart", "drop", "churn", "misbehave", "equivocate")
DEFAULT_MISBEHAVE_INTERVAL_S = 1.0
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")  # also the default topic, sim/<group>


@dataclass(frozen=True)
class LinkProfile:
    """One-way latency range (milliseconds) and the chance that a message must be retransmitted."""

    latency_ms: tuple[float, float]
    loss: float

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms": list(self.latency_ms), "loss": self.loss}


@dataclass(frozen=True)
class Group:
    name: str
    count: int | None  # fixed size, or None to take a share of the rest by ``weight``
    weight: float
    profile: LinkProfile
    validators: bool

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, **self.profile.to_json(), "validators": self.validators}
        if self.count is not None:
            doc["count"] = self.count
        else:
            doc["weight"] = self.weight
        return doc


@dataclass(frozen=True)
class Workload:
    group: str
    packets: int  # per epoch
    body_bytes: int
    topic: str
    from_epoch: int
    to_epoch: int | None  # inclusive; None: until the end

    def active(self, epoch: int) -> bool:
        return epoch >= self.from_epoch and (self.to_epoch is None or epoch <= self.to_epoch)

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group, "packets": self.packets, "body_bytes": self.body_bytes,
            "topic": self.topic, "from_epoch": self.from_epoch, "to_epoch": self.to_epoch,
        }


@dataclass(frozen=True)
class Selection:
    """Which nodes a fault hits: in ``group`` (None: any), ``count`` / ``fraction`` / all / by name."""

    group: str | None
    count: int | None = None
    fraction: float | None = None
    names: tuple[str, ...] = ()
    everyone: bool = False

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {} if self.group is None else {"group": self.group}
        if self.count is not None:
            doc["count"] = self.count
        if self.fraction is not None:
            doc["fraction"] = self.fraction
        if self.names:
            doc["nodes"] = list(self.names)
        if self.everyone:
            doc["all"] = True
        return doc


@dataclass(frozen=True)
class Fault:
    epoch: int
    kind: str  # one of FAULT_KINDS
    at_s: float = 0.0  # seconds into the epoch
    sides: tuple[tuple[str, ...], ...] = ()  # partition
    select: Selection | None = None  # crash, restart, drop, churn, misbehave
    downtime_s: float = 0.0  # churn
    interval_s: float = 0.0  # misbehave: seconds between two bad packets on each link

    def describe(self) -> str:
        if self.kind == "partition":
            return "partition " + " | ".join(",".join(side) for side in self.sides)
        if self.kind == "heal":
            return "heal"
        assert self.select is not None
        sel = self.select
        if sel.names:
            amount = ",".join(sel.names)
        elif sel.everyone:
            amount = "all"
        elif sel.count is not None:
            amount = str(sel.count)
        else:
            amount = f"{sel.fraction:g} of"
        if sel.group is not None:  # "crash 2 edge", "churn 0.1 of edge", "restart all edge"
            text = f"{self.kind} {amount} {sel.group}"
        elif sel.names:  # "drop edge-0001,edge-0002"
            text = f"{self.kind} {amount}"
        elif sel.everyone:
            text = f"{self.kind} all nodes"
        elif sel.count is not None:
            text = f"{self.kind} {amount} of all"
        else:
            text = f"{self.kind} {amount} all"
        if self.kind == "churn":
            text += f" for {self.downtime_s:g} s"
        if self.kind == "misbehave":
            text += f": a bad signature to each peer every {self.interval_s:g} s"
        return text

    def to_json(self) -> dict[str, Any]:
        """The scenario-file form of this fault."""
        doc: dict[str, Any] = {"epoch": self.epoch, "at_s": self.at_s}
        if self.kind == "partition":
            doc["partition"] = [list(s) for s in self.sides]
        elif self.kind == "heal":
            doc["heal"] = True
        else:
            assert self.select is not None
            doc[self.kind] = self.select.to_json()
        if self.kind == "churn":
            doc["downtime_s"] = self.downtime_s
        if self.kind == "misbehave":
            doc["interval_s"] = self.interval_s
        return doc


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    nodes: int
    epochs: int
    epoch_seconds: float
    sync_interval_s: float
    sample_interval_s: float
    quorum: int
    policy: str  # "default" (the node's shipped policy, as a real node) or "none" (tier table only)
    groups: tuple[Group, ...]
    links: dict[tuple[str, str], LinkProfile]
    tiers: dict[tuple[str, str], TrustTier]  # (group of the node, group of its peer) -> tier
    topology: dict[str, Any]
    workload: tuple[Workload, ...]
    faults: tuple[Fault, ...]
    source: str = field(default="", compare=False)

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def from_json(cls, doc: Any, source: str = "scenario") -> Scenario:
        return _Parser(source).scenario(doc)

    def with_overrides(self, *, nodes: int | None = None, epochs: int | None = None) -> Scenario:
        """The same scenario with ``--nodes`` / ``--epochs`` applied (checked like the file)."""
        doc = self.to_json()
        if nodes is not None:
            doc["nodes"] = nodes
        if epochs is not None:
            doc["epochs"] = epochs
        where = "the command line" if (nodes is not None or epochs is not None) else self.source
        return _Parser(where).scenario(doc)

    # -- queries ----------------------------------------------------------------------------

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def tier(self, mine: str, theirs: str) -> TrustTier:
        return self.tiers.get((mine, theirs), TrustTier.CORE)

    def link(self, a: str, b: str) -> LinkProfile:
        """The profile between a node of group ``a`` and one of ``b``.

        An explicit ``links`` entry wins; otherwise each group's profile is its access network, so
        latencies add and losses compound.
        """
        explicit = self.links.get((a, b)) or self.links.get((b, a))
        if explicit is not None:
            return explicit
        if a == b:
            return self.group(a).profile
        pa, pb = self.group(a).profile, self.group(b).profile
        loss = 1 - (1 - pa.loss) * (1 - pb.loss)
        return LinkProfile(
            (pa.latency_ms[0] + pb.latency_ms[0], pa.latency_ms[1] + pb.latency_ms[1]), round(loss, 6)
        )

    def group_sizes(self) -> dict[str, int]:
        """Nodes per group for ``self.nodes`` in all: fixed counts first, the rest by weight."""
        fixed = sum(g.count for g in self.groups if g.count is not None)
        flexible = [g for g in self.groups if g.count is None]
        rest = self.nodes - fixed
        sizes = {g.name: g.count for g in self.groups if g.count is not None}
        if flexible:
            total = sum(g.weight for g in flexible)
            shares = [(rest * g.weight / total, g.name) for g in flexible]
            floors = {name: int(share) for share, name in shares}
            left = rest - sum(floors.values())
            # Largest remainder, ties by declaration order: deterministic and sums exactly.
            order = sorted(range(len(shares)), key=lambda i: (-(shares[i][0] - int(shares[i][0])), i))
            for i in order[:left]:
                floors[shares[i][1]] += 1
            sizes.update(floors)
        return {g.name: sizes[g.name] for g in self.groups}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "nodes": self.nodes,
            "epochs": self.epochs,
            "epoch_seconds": self.epoch_seconds,
            "sync_interval_s": self.sync_interval_s,
            "sample_interval_s": self.sample_interval_s,
            "quorum": self.quorum,
            "policy": self.policy,
            "groups": [g.to_json() for g in self.groups],
            "links": [
                {"between": [a, b], **p.to_json()} for (a, b), p in self.links.items()
            ],
            "tiers": _tiers_json(self.tiers),
            "topology": dict(self.topology),
            "workload": [w.to_json() for w in self.workload],
            "faults": [f.to_json() for f in self.faults],
        }


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in _builtin_folder().iterdir() if p.name.endswith(".json"))


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a JSON file by path."""
    if name_or_path in builtin_names():
        text = _builtin_folder().joinpath(f"{name_or_path}.json").read_text()
        source = f"built-in scenario {name_or_path}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(
                f"no scenario {name_or_path!r}: not a built-in ({', '.join(builtin_names())}) "
                "and not a file"
            )
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the scenario {path}: {exc}") from None
        source = str(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    return Scenario.from_json(doc, source)


def _builtin_folder() -> Any:
    return resources.files("ark_lattice.sim").joinpath("scenarios")


# -- parsing ------------------------------------------------------------------------------------


class _Parser:
    """Checks a scenario document; every error names the field, e.g. ``faults[2].select.count``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {where}: {problem}")

    def scenario(self, doc: Any) -> Scenario:
        obj = self.object(doc, "the scenario", {
            "name", "description", "nodes", "epochs", "epoch_seconds", "sync_interval_s",
            "sample_interval_s", "quorum", "policy", "groups", "links", "tiers", "topology",
            "workload", "faults",
        })
        groups = self.groups(obj.get("groups"))
        names = [g.name for g in groups]
        fixed = sum(g.count for g in groups if g.count is not None)
        all_fixed = all(g.count is not None for g in groups)
        nodes = self.integer(obj, "nodes", 1, MAX_NODES, default=fixed if all_fixed else max(fixed + 1, 10))
        if nodes < fixed:
            raise self.fail("nodes", f"{nodes} is fewer than the {fixed} nodes the groups' counts need")
        if nodes > fixed and all_fixed:
            raise self.fail(
                "nodes", f"{nodes} nodes, but every group has a fixed count (summing to {fixed}); "
                "give some group a weight instead"
            )
        epochs = self.integer(obj, "epochs", 1, 10_000, default=5)
        epoch_seconds = self.number(obj, "epoch_seconds", 1, 86_400, default=60)
        policy = obj.get("policy", "default")
        if policy not in ("default", "none"):
            raise self.fail("policy", f'must be "default" or "none", not {policy!r}')
        quorum = self.integer(obj, "quorum", 0, MAX_NODES, default=0)
        validators = sum(1 for g in groups if g.validators)
        if quorum and not validators:
            raise self.fail("quorum", "is set but no group has \"validators\": true")
        return Scenario(
            name=self.string(obj, "name", default="unnamed"),
            description=self.string(obj, "description", default=""),
            nodes=nodes,
            epochs=epochs,
            epoch_seconds=epoch_seconds,
            sync_interval_s=self.number(obj, "sync_interval_s", 1, 86_400, default=20),
            sample_interval_s=self.number(obj, "sample_interval_s", 0.1, 86_400, default=2),
            quorum=quorum,
            policy=policy,
            groups=groups,
            links=self.links(obj.get("links", []), names),
            tiers=self.tiers(obj.get("tiers", {}), names),
            topology=self.topology(obj.get("topology", {}), names),
            workload=self.workload(obj.get("workload", []), names),
            faults=self.faults(obj.get("faults", []), names, epoch_seconds),
            source=self.source,
        )

    # -- sections ---------------------------------------------------------------------------

    def groups(self, value: Any) -> tuple[Group, ...]:
        items = self.array(value, "groups", min_len=1)
        out: list[Group] = []
        for i, item in enumerate(items):
            where = f"groups[{i}]"
            obj = self.object(item, where, {"name", "count", "weight", "latency_ms", "loss", "validators"})
            name = self.string(obj, "name", where=where)
            if not _GROUP_NAME.fullmatch(name):
                raise self.fail(
                    f"{where}.name", f"{name!r} must be 1-32 of a-z 0-9 - _, starting with a letter or digit"
                )
            if name in {g.name for g in out}:
                raise self.fail(f"{where}.name", f"the group {name!r} is defined twice")
            if "count" in obj and "weight" in obj:
                raise self.fail(where, "give either count or weight, not both")
            count = self.integer(obj, "count", 0, MAX_NODES, where=where) if "count" in obj else None
            weight = self.number(obj, "weight", 0, 1e9, where=where, default=1.0)
            validators = obj.get("validators", False)
            if not isinstance(validators, bool):
                raise self.fail(f"{where}.validators", "must be true or false")
            out.append(Group(name, count, weight, self.profile(obj, where, default=(1.0, 5.0)), validators))
        if all(g.count is None for g in out) and sum(g.weight for g in out) <= 0:
            raise self.fail("groups", "every group has weight 0")
        return tuple(out)

    def profile(self, obj: dict[str, Any], where: str, default: tuple[float, float]) -> LinkProfile:
        latency = obj.get("latency_ms", list(default))
        if isinstance(latency, (int, float)) and not isinstance(latency, bool):
            latency = [latency, latency]
        if (
            not isinstance(latency, list)
            or len(latency) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in latency)
            or not 0 <= latency[0] <= latency[1] <= 60_000
        ):
            raise self.fail(
                f"{where}.latency_ms", "must be [low, high] milliseconds with 0 <= low <= high <= 60000"
            )
        loss = self.number(obj, "loss", 0, 0.5, where=where, default=0.0)
        return LinkProfile((float(latency[0]), float(latency[1])), loss)

    def links(self, value: Any, names: list[str]) -> dict[tuple[str, str], LinkProfile]:
        out: dict[tuple[str, str], LinkProfile] = {}
        for i, item in enumerate(self.array(value, "links")):
            where = f"links[{i}]"
            obj = self.object(item, where, {"between", "latency_ms", "loss"})
            between = obj.get("between")
            if not isinstance(between, list) or len(between) != 2:
                raise self.fail(f"{where}.between", "must be two group names")
            for name in between:
                self.known(name, names, f"{where}.between")
            out[(between[0], between[1])] = self.profile(obj, where, default=(1.0, 5.0))
        return out

    def tiers(self, value: Any, names: list[str]) -> dict[tuple[str, str], TrustTier]:
        obj = self.object(value, "tiers", None)
        out: dict[tuple[str, str], TrustTier] = {}
        for mine, row in obj.items():
            self.known(mine, names, "tiers")
            row_obj = self.object(row, f"tiers.{mine}", None)
            for theirs, tier in row_obj.items():
                self.known(theirs, names, f"tiers.{mine}")
                try:
                    out[(mine, theirs)] = TrustTier(tier)
                except ValueError:
                    choices = ", ".join(t.value for t in TrustTier)
                    raise self.fail(f"tiers.{mine}.{theirs}", f"{tier!r} is not a tier ({choices})") from None
        return out

    def topology(self, value: Any, names: list[str]) -> dict[str, Any]:
        obj = self.object(value, "topology", {"degree", "pairs", "peers"})
        if "pairs" in obj and "degree" in obj:
            raise self.fail("topology", "give either degree or pairs, not both")
        peers = obj.get("peers", "connected")
        if peers not in ("connected", "all"):
            raise self.fail("topology.peers", f'must be "connected" or "all", not {peers!r}')
        if "pairs" in obj:
            pairs = self.array(obj["pairs"], "topology.pairs", min_len=1)
            out = []
            for i, pair in enumerate(pairs):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise self.fail(f"topology.pairs[{i}]", "must be [dialling group, dialled group]")
                for name in pair:
                    self.known(name, names, f"topology.pairs[{i}]")
                out.append([pair[0], pair[1]])
            return {"pairs": out, "peers": peers}
        degree = self.integer(obj, "degree", 2, 64, where="topology", default=4)
        if degree % 2:
            raise self.fail(
                "topology.degree", f"must be even (a ring plus degree/2 - 1 chords per node), not {degree}"
            )
        return {"degree": degree, "peers": peers}

    def workload(self, value: Any, names: list[str]) -> tuple[Workload, ...]:
        out = []
        for i, item in enumerate(self.array(value, "workload")):
            where = f"workload[{i}]"
            obj = self.object(
                item, where, {"group", "packets", "body_bytes", "topic", "from_epoch", "to_epoch"}
            )
            group = self.string(obj, "group", where=where)
            self.known(group, names, f"{where}.group")
            topic = self.string(obj, "topic", where=where, default=f"sim/{group}")
            try:
                check_topic(topic)
            except Exception as exc:
                raise self.fail(f"{where}.topic", str(exc)) from None
            to_epoch = obj.get("to_epoch")
            if to_epoch is not None:
                to_epoch = self.integer(obj, "to_epoch", 0, 10_000, where=where)
            out.append(Workload(
                group=group,
                packets=self.integer(obj, "packets", 0, 100_000, where=where),
                body_bytes=self.integer(obj, "body_bytes", 0, 1 << 20, where=where, default=256),
                topic=topic,
                from_epoch=self.integer(obj, "from_epoch", 0, 10_000, where=where, default=0),
                to_epoch=to_epoch,
            ))
        return tuple(out)

    def faults(self, value: Any, names: list[str], epoch_seconds: float) -> tuple[Fault, ...]:
        out = []
        for i, item in enumerate(self.array(value, "faults")):
            where = f"faults[{i}]"
            obj = self.object(item, where, {"epoch", "at_s", *FAULT_KINDS, "downtime_s", "interval_s"})
            kinds = [k for k in FAULT_KINDS if k in obj]
            if len(kinds) != 1:
                raise self.fail(where, f"needs exactly one of {', '.join(FAULT_KINDS)} (found {len(kinds)})")
            kind = kinds[0]
            # An epoch past the end is not an error: --epochs may shorten a scenario.
            epoch = self.integer(obj, "epoch", 0, 10_000, where=where)
            at_s = self.number(obj, "at_s", 0, epoch_seconds, where=where, default=0.0)
            if kind == "partition":
                sides = self.array(obj["partition"], f"{where}.partition", min_len=2)
                seen: set[str] = set()
                parsed = []
                for j, side in enumerate(sides):
                    side_list = self.array(side, f"{where}.partition[{j}]", min_len=1)
                    for name in side_list:
                        self.known(name, names, f"{where}.partition[{j}]")
                        if name in seen:
                            raise self.fail(f"{where}.partition", f"the group {name!r} is on two sides")
                        seen.add(name)
                    parsed.append(tuple(side_list))
                out.append(Fault(epoch, kind, at_s, sides=tuple(parsed)))
            elif kind == "heal":
                if obj["heal"] is not True:
                    raise self.fail(f"{where}.heal", "must be true")
                out.append(Fault(epoch, kind, at_s))
            else:
                select = self.selection(obj[kind], f"{where}.{kind}", names)
                downtime = 0.0
                if kind == "churn":
                    downtime = self.number(
                        obj, "downtime_s", 0, 86_400, where=where, default=epoch_seconds / 3
                    )
                    if select.names:
                        raise self.fail(
                            f"{where}.churn", "churn picks nodes at random: give count or fraction"
                        )
                elif "downtime_s" in obj:
                    raise self.fail(f"{where}.downtime_s", "only churn has a downtime")
                interval = 0.0
                if kind == "misbehave":
                    interval = self.number(
                        obj, "interval_s", 0.01, 86_400, where=where, default=DEFAULT_MISBEHAVE_INTERVAL_S
                    )
                elif "interval_s" in obj:
                    raise self.fail(f"{where}.interval_s", "only misbehave has an interval")
                out.append(Fault(epoch, kind, at_s, select=select, downtime_s=downtime, interval_s=interval))
        return tuple(sorted(out, key=lambda f: (f.epoch, f.at_s)))  # stable: file order within a time

    def selection(self, value: Any, where: str, names: list[str]) -> Selection:
        obj = self.object(value, where, {"group", "count", "fraction", "all", "nodes"})
        group = obj.get("group")
        if group is not None:
            self.known(group, names, f"{where}.group")
        how = [k for k in ("count", "fraction", "all", "nodes") if k in obj]
        if len(how) != 1:
            raise self.fail(where, "needs exactly one of count, fraction, all, nodes")
        if "count" in obj:
            return Selection(group, count=self.integer(obj, "count", 0, MAX_NODES, where=where))
        if "fraction" in obj:
            return Selection(group, fraction=self.number(obj, "fraction", 0, 1, where=where))
        if "all" in obj:
            if obj["all"] is not True:
                raise self.fail(f"{where}.all", "must be true")
            return Selection(group, everyone=True)
        nodes = self.array(obj["nodes"], f"{where}.nodes", min_len=1)
        if not all(isinstance(n, str) for n in nodes):
            raise self.fail(f"{where}.nodes", "must be node names such as \"edge-0003\"")
        return Selection(group, names=tuple(nodes))

    # -- primitives -------------------------------------------------------------------------

    def object(self, value: Any, where: str, allowed: set[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a JSON object, not {_kind(value)}")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise self.fail(
                    f"{where}.{unknown[0]}" if where != "the scenario" else unknown[0],
                    f"unknown field (known: {', '.join(sorted(allowed))})",
                )
        return value

    def array(self, value: Any, where: str, *, min_len: int = 0) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a JSON array, not {_kind(value)}")
        if len(value) < min_len:
            raise self.fail(where, f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}")
        return value

    def known(self, name: Any, names: list[str], where: str) -> None:
        if name not in names:
            raise self.fail(where, f"{name!r} is not a group (groups: {', '.join(names)})")

    def _present(self, obj: dict[str, Any], key: str, where: str, default: Any) -> tuple[str, Any, bool]:
        """(dotted field name, value, whether given); the default when absent, else an error."""
        field_name = f"{where}.{key}" if where else key
        if key not in obj:
            if default is None:
                raise self.fail(field_name, "is required")
            return field_name, default, False
        return field_name, obj[key], True

    def string(self, obj: dict[str, Any], key: str, *, where: str = "", default: str | None = None) -> str:
        field_name, value, given = self._present(obj, key, where, default)
        if not given:
            return value
        if not isinstance(value, str):
            raise self.fail(field_name, f"must be a string, not {_kind(value)}")
        return value

    def integer(
        self,
        obj: dict[str, Any],
        key: str,
        low: int,
        high: int,
        *,
        where: str = "",
        default: int | None = None,
    ) -> int:
        field_name, value, given = self._present(obj, key, where, default)
        if not given:
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(field_name, f"must be a whole number, not {_kind(value)}")
        if not low <= value <= high:
            raise self.fail(field_name, f"{value} is outside {low}..{high}")
        return value

    def number(
        self,
        obj: dict[str, Any],
        key: str,
        low: float,
        high: float,
        *,
        where: str = "",
        default: float | None = None,
    ) -> float:
        field_name, value, given = self._present(obj, key, where, default)
        if not given:
            return value
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(field_name, f"must be a number, not {_kind(value)}")
        if not low <= value <= high:
            raise self.fail(field_name, f"{value} is outside {low:g}..{high:g}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _tiers_json(tiers: dict[tuple[str, str], TrustTier]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for (mine, theirs), tier in tiers.items():
        out.setdefault(mine, {})[theirs] = tier.value
    return out
