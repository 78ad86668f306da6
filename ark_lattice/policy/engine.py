"""The policy engine (DESIGN §9): TOML rules with CEL conditions, compiled once, decided often.

A request on hook H is allowed only if some ``allow`` rule for H matches and no ``deny`` rule for H
matches. A condition that fails at evaluation (a type error, an overflow, a result that is not a
bool) fails closed: it counts as a match for a deny rule and as no match for an allow rule, and the
failure is reported in the :class:`Decision`.

Conditions see one flat set of variables, the same on every hook (:data:`VARIABLES`); an input a
hook does not supply takes the variable's documented zero value, so every condition can be
evaluated on every hook. A condition naming anything else is refused when the file is loaded.

The engine is pure: it reads no clock, and no file except in :meth:`Policy.from_file`; the caller
passes ``now`` and the other inputs (only :func:`bench_decisions` times itself). Conditions get the
core library of ``cel-rust`` only (no Python-callback extensions), which keeps a decision in the
microseconds.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

from ark_lattice.errors import PolicyError, UsageError
from ark_lattice.policy.celcore import cel
from ark_lattice.protocol.budget import DEFAULT_BUDGET, MemberBudget

__all__ = [
    "Policy",
    "Decision",
    "FailedCondition",
    "Rule",
    "RateLimit",
    "Limits",
    "Hook",
    "Effect",
    "Scope",
    "Variable",
    "VARIABLES",
    "POLICY_VERSION",
    "PUBLIC_TOPIC_PREFIX",
    "DEFAULT_POLICY_TEXT",
    "bench_decisions",
]

POLICY_VERSION = 1
# DESIGN §5: external peers may query only the topics policy marks public.
PUBLIC_TOPIC_PREFIX = "public/"
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1  # CEL int is 64-bit signed


class Hook(enum.StrEnum):
    """The points where a request is put to the policy (DESIGN §9)."""

    INBOUND_PACKET = "inbound_packet"
    OUTBOUND_PACKET = "outbound_packet"
    QUERY = "query"
    TIER_CHANGE = "tier_change"
    GOVERNANCE = "governance"
    ALERT = "alert"  # allowed: the peer an alert accuses may be quarantined at once


class Effect(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Scope(enum.StrEnum):
    """What a rate limit counts per: one bucket per peer, per topic, per (peer, topic), or per
    packet author (the node that signed it, whoever relayed it)."""

    PEER = "peer"
    TOPIC = "topic"
    PEER_TOPIC = "peer_topic"
    AUTHOR = "author"


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    type: str  # the CEL type: "string", "int", "double" or "bool"
    zero: str | int | float | bool  # the value a condition sees when the hook supplies none
    meaning: str


# The one table of what a condition can see. Every hook gets every variable; what a hook does not
# supply is the zero value. ``hook`` is always set by the engine; ``direction`` defaults from the
# packet hooks and ``is_public_topic`` from ``topic`` unless the caller passes them.
VARIABLES: Mapping[str, Variable] = {
    v.name: v
    for v in (
        Variable("hook", "string", "", "the hook being decided: inbound_packet, outbound_packet, "
                 "query, tier_change, governance or alert (set by the engine)"),
        Variable("direction", "string", "", "inbound (a peer sends or asks us) or outbound (we "
                 "send or ask); defaults to the packet hook's direction, else empty"),
        Variable("now", "int", 0, "the decision time, Unix seconds (passed in by the caller)"),
        Variable("self_id", "string", "", "our own node ID (base32)"),
        Variable("peer_id", "string", "", "the remote peer's node ID (base32); for governance the "
                 "proposal's author"),
        Variable("peer_tier", "string", "", "the remote peer's trust tier: core, sandbox, "
                 "external, unknown or blocked; for alert the peer that sent us the alert"),
        Variable("strikes", "int", 0, "strikes currently counted against the peer"),
        Variable("rate_peer", "double", 0.0, "recent packets per second from (or to) this peer"),
        Variable("rate_topic", "double", 0.0, "recent packets per second on this topic"),
        Variable("topic", "string", "", "the packet's or query's topic"),
        Variable("is_public_topic", "bool", False, "the topic starts with \"public/\" "
                 "(derived from topic unless passed)"),
        Variable("kind", "string", "", "the packet kind: note, document, alert, model_update, "
                 "model, policy_bundle, proposal, approval"),
        Variable("author", "string", "", "the packet author's node ID (base32); for alert the "
                 "node that raised it"),
        Variable("size", "int", 0, "the packet body's size in bytes"),
        Variable("age_s", "int", 0, "now minus the packet's created time, seconds (negative if "
                 "created in the future)"),
        Variable("hops", "int", 0, "relay hops the packet has made so far"),
        Variable("new_tier", "string", "", "tier_change: the tier the peer would move to"),
        Variable("actor", "string", "", "tier_change: who asks for it: operator, policy, alert or "
                 "governance"),
        Variable("proposal_kind", "string", "", "governance: what the proposal changes: "
                 "policy, tier, members or round"),
        Variable("approvals", "int", 0, "governance: distinct core approvals held for the "
                 "proposal"),
        Variable("severity", "string", "", "alert: info, warning or critical"),
        Variable("accused", "string", "", "alert: the node ID (base32) of the peer the alert "
                 "accuses, \"\" if none"),
        Variable("has_evidence", "bool", False, "alert: the alert carries self-proving evidence "
                 "against the accused (two conflicting statements it signed)"),
        Variable("author_tier", "string", "", "alert: our trust tier for the alert's author, "
                 "\"unknown\" if we do not know it"),
    )
}


@dataclass(frozen=True, slots=True)
class FailedCondition:
    """A condition that could not be evaluated to a bool for one decision."""

    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    hook: Hook
    fired: tuple[str, ...]  # ids of the rules that matched (a failing deny rule counts), file order
    reason: str  # one sentence, for the audit trail
    errors: tuple[FailedCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    effect: Effect
    hooks: tuple[Hook, ...]
    condition: str
    description: str
    line: int  # where the rule's table starts in the policy file
    program: cel.Program = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class RateLimit:
    id: str
    scope: Scope
    hooks: tuple[Hook, ...]
    rate: float  # tokens refilled per second
    burst: int  # bucket size: the most requests allowed at once
    line: int


@dataclass(frozen=True, slots=True)
class Limits:
    strikes_to_block: int = 5  # strikes after which the tier layer isolates a peer; 0 = never
    # How long a quarantine on an accusation without self-proving evidence lasts, in seconds.
    alert_quarantine_s: int = 3600
    # Distinct core authors accusing one peer that turn its quarantine into a permanent block.
    alert_accusers_to_block: int = 2
    # What one peer may make us spend (protocol/budget.py, docs/operator.md): decoding limits of
    # each frame, and reconciliation ranges per message and work per second.
    decode_max_depth: int = DEFAULT_BUDGET.decode_max_depth
    decode_max_items: int = DEFAULT_BUDGET.decode_max_items
    decode_max_alloc: int = DEFAULT_BUDGET.decode_max_alloc
    recon_max_ranges: int = DEFAULT_BUDGET.recon_max_ranges
    recon_cost_per_s: int = DEFAULT_BUDGET.recon_cost_per_s
    recon_cost_burst: int = DEFAULT_BUDGET.recon_cost_burst
    # Seconds between two summaries of a peer's repeated decisions (policy/repeats.py).
    audit_summary_s: int = 300

    @property
    def budget(self) -> MemberBudget:
        return MemberBudget(
            decode_max_depth=self.decode_max_depth,
            decode_max_items=self.decode_max_items,
            decode_max_alloc=self.decode_max_alloc,
            recon_max_ranges=self.recon_max_ranges,
            recon_cost_per_s=self.recon_cost_per_s,
            recon_cost_burst=self.recon_cost_burst,
        )


class Policy:
    """A loaded, compiled policy file. Build it with :meth:`load` or :meth:`from_file`."""

    __slots__ = ("text", "source", "digest", "rules", "rate_limits", "limits", "_plans")

    text: str
    source: str
    digest: str  # SHA-256 hex of the UTF-8 text, named in ledger events
    rules: tuple[Rule, ...]
    rate_limits: tuple[RateLimit, ...]
    limits: Limits
    # Keyed by Hook, a StrEnum: a plain hook name such as "query" finds the same plan.
    _plans: dict[str, _Plan]

    def __init__(
        self,
        text: str,
        source: str,
        rules: tuple[Rule, ...],
        rate_limits: tuple[RateLimit, ...],
        limits: Limits,
    ) -> None:
        self.text = text
        self.source = source
        self.digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        self.rules = rules
        self.rate_limits = rate_limits
        self.limits = limits
        self._plans = {hook: _Plan.build(hook, rules) for hook in Hook}

    @classmethod
    def load(cls, text: str, source: str = "policy.toml") -> Policy:
        """Parse, check and compile a policy; a PolicyError names the line of the first problem."""
        return _Loader(text, source).load()

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except OSError as exc:
            message = f"cannot read policy file {str(path)!r}: {exc.strerror}"
            raise PolicyError(message, file=str(path)) from None
        except UnicodeDecodeError:
            raise PolicyError(f"policy file {str(path)!r} is not UTF-8 text", file=str(path)) from None
        return cls.load(text, source=str(path))

    @classmethod
    def default(cls) -> Policy:
        """The policy shipped with ark-lattice and written by ``init``."""
        return cls.load(DEFAULT_POLICY_TEXT, source="default.toml")

    def decide(self, hook: Hook | str, inputs: Mapping[str, Any] | None = None) -> Decision:
        """Decide one request on ``hook`` from ``inputs`` (variable name → value; see VARIABLES).

        Raises UsageError only for an unknown hook, an unknown input name, or an input of the wrong
        Python type among those the hook's conditions read; anything that goes wrong inside a
        condition fails closed and is reported in the decision.
        """
        plan = self._plans.get(hook)
        if plan is None:
            raise UsageError(f"unknown policy hook {hook!r}; choose one of {_HOOK_NAMES}")
        variables = plan.variables(inputs)
        if not plan.memoizable:
            return self._evaluate(plan, variables)
        # A decision is a function of the variables its hook's conditions read and nothing else
        # (CEL's standard functions are pure; there is no clock), and a sync decides thousands of
        # packets with the same few values (tier, size, age): the answer for values seen before
        # is taken from the memo, not evaluated again. Only hooks that read no double qualify:
        # -0.0 == 0.0 as a key, yet a condition can tell them apart.
        key = tuple(variables.items())
        known = plan.memo.get(key)
        if known is not None:
            return known
        decision = self._evaluate(plan, variables)
        if len(plan.memo) >= _MEMO_SIZE:
            plan.memo.clear()
        plan.memo[key] = decision
        return decision

    def reads(self, hook: Hook | str) -> frozenset[str]:
        """The variables the conditions of ``hook`` read: inputs outside it cannot change a
        decision there, so a caller may skip the work of computing them."""
        plan = self._plans.get(hook)
        if plan is None:
            raise UsageError(f"unknown policy hook {hook!r}; choose one of {_HOOK_NAMES}")
        return plan.needed

    @staticmethod
    def _evaluate(plan: _Plan, variables: dict[str, Any]) -> Decision:
        try:
            context = cel.Context(variables)
        except Exception as exc:  # e.g. a string holding a lone surrogate cannot enter CEL
            return plan.settle_failure(_one_line(exc))
        fired: list[str] = []
        failed: list[FailedCondition] | None = None
        for program, rule_id, deny in plan.checks:
            try:
                result = program.execute(context)
            except Exception as exc:  # cel raises TypeError, OverflowError, RuntimeError, ...
                result = _one_line(exc)
            if result is True:
                fired.append(rule_id)
            elif result is not False:
                if not isinstance(result, str):
                    result = f"the condition returned {_cel_type(result)}, not bool"
                if failed is None:
                    failed = []
                failed.append(FailedCondition(rule_id, result))
                if deny:  # fail closed: a deny rule that cannot be evaluated matches
                    fired.append(rule_id)
        if failed is None:
            decision = plan.cache.get(tuple(fired))
            return decision if decision is not None else plan.settle(tuple(fired), ())
        return plan.settle(tuple(fired), tuple(failed))

    def rate_limits_for(self, hook: Hook | str) -> tuple[RateLimit, ...]:
        return tuple(limit for limit in self.rate_limits if hook in limit.hooks)

    def __repr__(self) -> str:
        return (
            f"Policy(source={self.source!r}, rules={len(self.rules)}, "
            f"rate_limits={len(self.rate_limits)}, digest={self.digest[:12]})"
        )


def bench_decisions(
    policy: Policy,
    inputs: Mapping[str, Any],
    n: int,
    hook: Hook | str = Hook.INBOUND_PACKET,
) -> dict[str, Any]:
    """Measure :meth:`Policy.decide` against bare ``cel`` on the same programs and inputs.

    The bare loop does the least any caller of ``cel`` must do per request: build one context from
    the (already typed) variables the hook's conditions reference and execute each program once.
    ``eval_only_per_s`` reuses one context, so it shows what CEL costs without the conversion of
    inputs. Each loop runs twice and the faster run counts. DESIGN target: ``ratio`` ≥ 0.5.
    """
    if n < 1:
        raise UsageError("the number of decisions must be at least 1")
    plan = policy._plans.get(hook)
    if plan is None:
        raise UsageError(f"unknown policy hook {hook!r}; choose one of {_HOOK_NAMES}")
    variables = plan.variables(inputs)
    programs = [program for program, _, _ in plan.checks]

    def engine() -> None:
        decide = policy.decide
        for _ in range(n):
            decide(hook, inputs)

    def bare() -> None:
        context_of = cel.Context
        for _ in range(n):
            context = context_of(variables)
            for program in programs:
                try:
                    program.execute(context)
                except Exception:
                    pass

    def eval_only() -> None:
        context = cel.Context(variables)
        for _ in range(n):
            for program in programs:
                try:
                    program.execute(context)
                except Exception:
                    pass

    def best_of_two(loop: Any) -> float:
        times = []
        for _ in range(2):
            start = time.perf_counter()
            loop()
            times.append(time.perf_counter() - start)
        return max(min(times), 1e-9)

    engine_s, bare_s, eval_s = best_of_two(engine), best_of_two(bare), best_of_two(eval_only)
    return {
        "hook": str(plan.hook),
        "decisions": n,
        "rules_evaluated": len(programs),
        "variables_converted": len(variables),
        "engine_per_s": n / engine_s,
        "bare_per_s": n / bare_s,
        "eval_only_per_s": n / eval_s,
        "engine_us": engine_s / n * 1e6,
        "bare_us": bare_s / n * 1e6,
        "ratio": bare_s / engine_s,
    }


DEFAULT_POLICY_TEXT: str = (
    resources.files("ark_lattice.policy").joinpath("default.toml").read_text(encoding="utf-8")
)


# --- private: deciding ----------------------------------------------------------------------------

_HOOK_NAMES = ", ".join(h.value for h in Hook)
_HOOK_VALUES = frozenset(h.value for h in Hook)
_EFFECT_NAMES = ", ".join(e.value for e in Effect)
_SCOPE_NAMES = ", ".join(s.value for s in Scope)
_DIRECTION = {Hook.INBOUND_PACKET: "inbound", Hook.OUTBOUND_PACKET: "outbound"}
_PYTHON_TYPE = {"string": str, "int": int, "double": float, "bool": bool}
_INPUT_TYPES = {v.name: _PYTHON_TYPE[v.type] for v in VARIABLES.values() if v.name != "hook"}
_INPUT_NAMES = frozenset(_INPUT_TYPES)
_DECISION_CACHE_SIZE = 1024
_MEMO_SIZE = 4096  # decisions remembered by their variables, per hook; then forgotten at once


def _coerce(name: str, value: Any) -> Any:
    """``value`` as the Python type of variable ``name``, or UsageError; the slow path of
    :meth:`_Plan.variables`, for values whose type is not exactly the expected one."""
    expected = _INPUT_TYPES.get(name)
    if expected is None:
        raise UsageError(_unknown_input(name))
    accepted = (int, float) if expected is float else expected
    if isinstance(value, bool) or not isinstance(value, accepted):
        what = {str: "a string", int: "an int", float: "a number", bool: "a bool"}[expected]
        raise UsageError(f"policy input {name} must be {what}, not {type(value).__name__}")
    # ``value`` is an instance of ``accepted`` and not a bool, so exactly one branch below applies;
    # the isinstance tests repeat that for the type checker.
    if expected is str and isinstance(value, str):
        return str(value)  # a StrEnum (TrustTier, Hook) becomes its plain value
    if expected is int and isinstance(value, int):
        return _saturate(int(value))
    number = cast(int | float, value)  # expected is float, so accepted is (int, float)
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def _saturate(value: int) -> int:
    # Saturate instead of letting cel turn a huge int into a uint or double, which would make every
    # comparison with an int literal a type error.
    return _INT64_MAX if value > _INT64_MAX else _INT64_MIN if value < _INT64_MIN else value


@dataclass(frozen=True, slots=True)
class _Plan:
    """What :meth:`Policy.decide` needs for one hook, prepared once at load."""

    hook: Hook
    checks: tuple[tuple[cel.Program, str, bool], ...]  # (program, rule id, is deny), file order
    deny_ids: frozenset[str]
    needed: frozenset[str]  # variables the hook's conditions read: only these enter CEL
    reads: tuple[tuple[str, type], ...]  # (name, Python type) of the needed caller-set variables
    zero: dict[str, Any]  # the needed variables at their zero values (hook and direction set)
    derive_public: bool  # is_public_topic is needed, so derive it from topic when not passed
    cache: dict[tuple[str, ...], Decision]  # error-free decisions by fired rules: they repeat
    memoizable: bool  # no variable read is a double: decisions may be remembered by their inputs
    memo: dict[tuple[tuple[str, Any], ...], Decision]  # decisions by their variables (decide)

    @classmethod
    def build(cls, hook: Hook, rules: Iterable[Rule]) -> _Plan:
        mine = [rule for rule in rules if hook in rule.hooks]
        needed: set[str] = set()
        for rule in mine:
            needed.update(_free_variables(rule.program, rule.condition))
        needed &= VARIABLES.keys()
        # is_public_topic is derived from topic, which must then be read even if no rule names it.
        derived = {"topic"} if "is_public_topic" in needed else set()
        zero = {name: VARIABLES[name].zero for name in sorted(needed)}
        if "hook" in zero:
            zero["hook"] = hook.value
        if "direction" in zero:
            zero["direction"] = _DIRECTION.get(hook, "")
        return cls(
            hook=hook,
            checks=tuple((r.program, r.id, r.effect is Effect.DENY) for r in mine),
            deny_ids=frozenset(r.id for r in mine if r.effect is Effect.DENY),
            needed=frozenset(needed),
            reads=tuple((n, _INPUT_TYPES[n]) for n in sorted((needed | derived) - {"hook"})),
            zero=zero,
            derive_public="is_public_topic" in needed,
            cache={},
            memoizable=all(VARIABLES[name].type != "double" for name in needed),
            memo={},
        )

    def variables(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The CEL variables for one decision: the needed ones, from ``inputs`` or at their zero
        values. Unknown input names are refused; only the inputs read are type-checked, since
        checking the rest would cost more than the decision itself."""
        values = self.zero.copy()
        if not inputs:
            return values
        if not inputs.keys() <= _INPUT_NAMES:
            raise UsageError(_unknown_input(min(inputs.keys() - _INPUT_NAMES, key=str)))
        for name, expected in self.reads:
            if name in inputs:
                value = inputs[name]
                if type(value) is not expected:
                    value = _coerce(name, value)
                elif expected is int and not _INT64_MIN <= cast(int, value) <= _INT64_MAX:
                    value = _saturate(cast(int, value))  # type(value) is expected, which is int
                values[name] = value
        if self.derive_public and "is_public_topic" not in inputs:
            values["is_public_topic"] = values.get("topic", "").startswith(PUBLIC_TOPIC_PREFIX)
        return values

    def settle(self, fired: tuple[str, ...], failed: tuple[FailedCondition, ...]) -> Decision:
        if not failed:
            decision = self.cache.get(fired)
            if decision is not None:
                return decision
        denied_by = next((i for i in fired if i in self.deny_ids), None)
        allowed_by = next((i for i in fired if i not in self.deny_ids), None)
        decision = Decision(
            allowed=denied_by is None and allowed_by is not None,
            hook=self.hook,
            fired=fired,
            reason=_reason(self.hook, allowed_by, denied_by, failed),
            errors=failed,
        )
        if not failed and len(self.cache) < _DECISION_CACHE_SIZE:
            self.cache[fired] = decision  # frozen, so one object can answer many requests
        return decision

    def settle_failure(self, message: str) -> Decision:
        """Nothing could be evaluated (the inputs could not enter CEL): every rule failed."""
        failed = tuple(FailedCondition(rule_id, message) for _, rule_id, _ in self.checks)
        fired = tuple(rule_id for _, rule_id, deny in self.checks if deny)
        return self.settle(fired, failed)


def _unknown_input(name: object) -> str:
    if name == "hook":
        return "policy input hook is set by the engine from the hook decided, not by the caller"
    return f"unknown policy input {name!r}; the variables are {', '.join(VARIABLES)}"


def _reason(
    hook: Hook, allowed_by: str | None, denied_by: str | None, errors: tuple[FailedCondition, ...]
) -> str:
    failed = {e.rule for e in errors}
    if denied_by is not None:
        if denied_by in failed:
            return f"denied by rule {denied_by!r}, whose condition failed to evaluate (fail closed)"
        return f"denied by rule {denied_by!r}"
    if allowed_by is not None:
        return f"allowed by rule {allowed_by!r}"
    if errors:
        names = ", ".join(repr(e.rule) for e in errors)
        return (
            f"denied by default: no allow rule for {hook} matched ({names} could not be evaluated)"
        )
    return f"denied by default: no allow rule for {hook} matched"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _cel_type(value: Any) -> str:
    if value is None:
        return "null"
    return {int: "int", float: "double", str: "string", bytes: "bytes", list: "list",
            dict: "map"}.get(type(value), type(value).__name__)


# Names a comprehension macro binds (`[..].exists(x, x > 1)`): cel reports them as variables.
_BOUND = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)


def _free_variables(program: cel.Program, source: str) -> set[str]:
    return set(program.variables()) - set(_BOUND.findall(source))


# --- private: loading -----------------------------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)\s*$")
_CEL_AT = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")
_CEL_EXPECTING = re.compile(r" expecting \{[^}]*\}")  # the parser's whole token list: noise

# The functions and macros of the CEL specification's standard definitions, plus cel-rust's
# optional-value helpers: a call to any other name cannot work.
_CEL_FUNCTIONS = frozenset(
    "size contains startsWith endsWith matches int uint double string bytes bool dyn type "
    "duration timestamp getDate getDayOfMonth getDayOfWeek getDayOfYear getFullYear getHours "
    "getMilliseconds getMinutes getMonth getSeconds has all exists exists_one map filter max min "
    "optional hasValue value or orValue".split()
)
_TOP_KEYS = {"version", "limits", "rate_limit", "rule"}
_RULE_KEYS = {"id", "effect", "hooks", "condition", "description"}
_RATE_KEYS = {"id", "scope", "hooks", "rate", "burst"}
# The least each budget key may be: what an honest peer needs (protocol/budget.py), so that no
# policy can make an honest peer's frames or reconciliation earn strikes.
_LIMIT_MINIMUMS = {
    "strikes_to_block": 0,
    "alert_quarantine_s": 0,
    "alert_accusers_to_block": 0,
    "decode_max_depth": 4,
    "decode_max_items": 8192,
    "decode_max_alloc": 4 * 1024 * 1024,
    "recon_max_ranges": 10_000,
    "recon_cost_per_s": 1000,
    "recon_cost_burst": 50_000,
    "audit_summary_s": 1,
}
_LIMIT_KEYS = set(_LIMIT_MINIMUMS)


class _Loader:
    def __init__(self, text: str, source: str) -> None:
        if not isinstance(text, str):
            raise UsageError("a policy is loaded from text (str); decode the file first")
        self.text = text
        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        self.block_values: set[tuple[Any, ...]] = set()
        self.ids: set[str] = set()

    def fail(self, line: int, message: str) -> PolicyError:
        return PolicyError(f"{self.source} line {line}: {message}", file=self.source, line=line)

    def line(self, *paths: tuple[Any, ...]) -> int:
        """The line of the first path found, trying each path and then its parents."""
        for path in paths:
            for end in range(len(path), 0, -1):
                line = self.lines.get(path[:end])
                if line is not None:
                    return line
        return 1

    def load(self) -> Policy:
        try:
            doc = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            raise self._toml_error(exc) from None
        self.lines, self.block_values = _locate(self.text)

        for key in doc:
            if key not in _TOP_KEYS:
                raise self.fail(self.line((key,)), f"unknown key {key!r}; a policy has "
                                "version, [limits], [[rate_limit]] and [[rule]]")
        version = doc.get("version")
        if version is None:
            raise self.fail(1, f"missing version = {POLICY_VERSION} at the top of the file")
        if type(version) is not int or version != POLICY_VERSION:
            raise self.fail(self.line(("version",)),
                            f"version must be {POLICY_VERSION}, not {version!r}")

        limits = self._limits(doc.get("limits", {}))
        rate_limits = tuple(
            self._rate_limit(i, entry) for i, entry in enumerate(self._tables(doc, "rate_limit"))
        )
        rules = tuple(self._rule(i, entry) for i, entry in enumerate(self._tables(doc, "rule")))
        return Policy(self.text, self.source, rules, rate_limits, limits)

    def _toml_error(self, exc: tomllib.TOMLDecodeError) -> PolicyError:
        message = str(exc)
        match = _TOML_AT.search(message)
        if match:
            line = int(match.group(1))
            what = f"{_TOML_AT.sub('', message)} (column {match.group(2)})"
        else:
            line = self.text.count("\n") + 1
            what = _TOML_AT_END.sub("", message) + " (at the end of the file)"
        return self.fail(line, f"not valid TOML: {what[:1].lower()}{what[1:]}")

    def _tables(self, doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
        entries = doc.get(name, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise self.fail(
                self.line((name,)), f"{name} must be an array of tables, written [[{name}]]"
            )
        return entries

    def _limits(self, table: Any) -> Limits:
        where = ("limits",)
        if not isinstance(table, dict):
            raise self.fail(self.line(where), "limits must be a table, written [limits]")
        self._no_unknown_keys(table, _LIMIT_KEYS, where, "[limits]")
        defaults = Limits()
        values: dict[str, int] = {}
        for key in sorted(_LIMIT_KEYS):
            value = table.get(key, getattr(defaults, key))
            least = _LIMIT_MINIMUMS[key]
            if type(value) is not int or not least <= value <= _INT64_MAX:
                raise self.fail(self.line((*where, key)),
                                f"{key} must be an integer ≥ {least}, not {value!r}")
            values[key] = value
        return Limits(**values)

    def _no_unknown_keys(
        self, table: dict[str, Any], allowed: set[str], where: tuple[Any, ...], what: str
    ) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(self.line((*where, key)), f"unknown key {key!r} in {what}; "
                                f"expected {', '.join(sorted(allowed))}")

    def _identify(self, table: dict[str, Any], where: tuple[Any, ...], kind: str) -> str:
        if "id" not in table:
            raise self.fail(self.line(where), f"this [[{kind}]] has no id")
        ident = table["id"]
        if not isinstance(ident, str) or not _ID.fullmatch(ident):
            raise self.fail(self.line((*where, "id")), f"{kind} id {ident!r} must be 1 to 64 "
                            "letters, digits, '_', '.', ':' or '-', starting with a letter or "
                            "digit")
        if ident in self.ids:
            raise self.fail(self.line((*where, "id")), f"duplicate id {ident!r}; rule and "
                            "rate_limit ids must be unique")
        self.ids.add(ident)
        return ident

    def _require(self, table: dict[str, Any], key: str, where: tuple[Any, ...], label: str) -> Any:
        if key not in table:
            raise self.fail(self.line(where), f"{label} has no {key}")
        return table[key]

    def _hooks(self, table: dict[str, Any], where: tuple[Any, ...], label: str) -> tuple[Hook, ...]:
        hooks = self._require(table, "hooks", where, label)
        line = self.line((*where, "hooks"))
        if not isinstance(hooks, list) or not hooks or not all(isinstance(h, str) for h in hooks):
            raise self.fail(line, f"hooks of {label} must be a non-empty list of strings "
                            f"drawn from {_HOOK_NAMES}")
        for name in hooks:
            if name not in _HOOK_VALUES:
                raise self.fail(line, f"{label} names unknown hook {name!r}; "
                                f"choose from {_HOOK_NAMES}")
        return tuple(dict.fromkeys(Hook(h) for h in hooks))

    def _rate_limit(self, index: int, table: dict[str, Any]) -> RateLimit:
        where = ("rate_limit", index)
        ident = self._identify(table, where, "rate_limit")
        label = f"rate_limit {ident!r}"
        self._no_unknown_keys(table, _RATE_KEYS, where, label)
        scope = self._require(table, "scope", where, label)
        if not isinstance(scope, str) or scope not in Scope.__members__.values():
            raise self.fail(self.line((*where, "scope")),
                            f"{label} has unknown scope {scope!r}; choose from {_SCOPE_NAMES}")
        hooks = self._hooks(table, where, label)
        rate = self._require(table, "rate", where, label)
        if type(rate) not in (int, float) or not 0 < rate < math.inf:
            raise self.fail(self.line((*where, "rate")),
                            f"rate of {label} must be a positive number per second, not {rate!r}")
        burst = self._require(table, "burst", where, label)
        if type(burst) is not int or burst < 1:
            raise self.fail(self.line((*where, "burst")),
                            f"burst of {label} must be an integer ≥ 1, not {burst!r}")
        return RateLimit(ident, Scope(scope), hooks, float(rate), burst, self.line(where))

    def _rule(self, index: int, table: dict[str, Any]) -> Rule:
        where = ("rule", index)
        ident = self._identify(table, where, "rule")
        label = f"rule {ident!r}"
        self._no_unknown_keys(table, _RULE_KEYS, where, label)
        effect = self._require(table, "effect", where, label)
        if not isinstance(effect, str) or effect not in Effect.__members__.values():
            raise self.fail(self.line((*where, "effect")),
                            f"{label} has unknown effect {effect!r}; choose from {_EFFECT_NAMES}")
        hooks = self._hooks(table, where, label)
        description = table.get("description", "")
        if not isinstance(description, str):
            raise self.fail(self.line((*where, "description")),
                            f"description of {label} must be a string")
        condition = self._require(table, "condition", where, label)
        key = (*where, "condition")
        line = self.line(key)
        if not isinstance(condition, str) or not condition.strip():
            raise self.fail(line, f"condition of {label} must be a non-empty string of CEL")
        program = self._compile(condition, key, label)
        unknown = sorted(_free_variables(program, condition) - VARIABLES.keys())
        if unknown:
            names = ", ".join(unknown)
            raise self.fail(line, f"condition of {label} uses unknown variable"
                            f"{'s' if len(unknown) > 1 else ''} {names}; see the variable table "
                            "in docs/policy.md")
        self._trial(program, hooks, line, label)
        return Rule(ident, Effect(effect), hooks, condition, description, self.line(where), program)

    def _compile(self, condition: str, key: tuple[Any, ...], label: str) -> cel.Program:
        try:
            return cel.compile(condition)
        except Exception as exc:  # cel raises ValueError with "ERROR: <input>:L:C: ..." inside
            line = self.line(key)
            match = _CEL_AT.search(str(exc))
            if not match:
                raise self.fail(
                    line, f"condition of {label} is not valid CEL: {_one_line(exc)}"
                ) from None
            cel_line, column, what = int(match.group(1)), match.group(2), match.group(3).strip()
            # A '''...''' condition starting on the line after the key: TOML drops that newline.
            line += cel_line - 1 + (key in self.block_values)
            what = _CEL_EXPECTING.sub("", what.removeprefix("Syntax error: "))
            raise self.fail(line, f"condition of {label} is not valid CEL (column {column} of the "
                            f"expression): {what}") from None

    def _trial(self, program: cel.Program, hooks: tuple[Hook, ...], line: int, label: str) -> None:
        """Evaluate on the zero inputs of each hook: catches a misspelt function and a condition
        that returns something other than a bool, which otherwise fail only at decision time."""
        for hook in hooks:
            values = {v.name: v.zero for v in VARIABLES.values()}
            values["hook"], values["direction"] = hook.value, _DIRECTION.get(hook, "")
            try:
                result = program.execute(values)
            except RuntimeError as exc:
                match = re.search(r"Undefined variable or function: '([^']*)'", str(exc))
                # cel reports a standard function called with unsupported argument types the same
                # way (string(true)), so only a name outside standard CEL is surely unknown.
                if match and match.group(1) not in _CEL_FUNCTIONS:
                    raise self.fail(line, f"condition of {label} calls unknown function "
                                    f"{match.group(1)}()") from None
                continue
            except Exception:  # legitimate at zero inputs (say, a division by size)
                continue
            if not isinstance(result, bool):
                raise self.fail(line, f"condition of {label} returns {_cel_type(result)}, not bool")


# --- private: where things are in the TOML text ---------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_KEY_PART = rf"""(?:{_BARE}|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED = rf"{_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*"
_ARRAY_HEADER = re.compile(rf"\[\[[ \t]*({_DOTTED})[ \t]*\]\]")
_TABLE_HEADER = re.compile(rf"\[[ \t]*({_DOTTED})[ \t]*\]")
_KEY = re.compile(rf"({_DOTTED})[ \t]*=[ \t]*")
_PART = re.compile(_KEY_PART)


def _key_path(dotted: str) -> tuple[str, ...]:
    parts = []
    for match in _PART.finditer(dotted):
        part = match.group()
        parts.append(tomllib.loads(f"k = {part}")["k"] if part[0] in "\"'" else part)
    return tuple(parts)


def _locate(text: str) -> tuple[dict[tuple[Any, ...], int], set[tuple[Any, ...]]]:
    """Map each table and key of a valid TOML document to its line; tomllib keeps no positions.

    Paths are as in the parsed document, with an index for arrays of tables:
    ``("rule", 2, "hooks")``.
    Also returns the keys whose value is a multi-line string opening with a newline. Only headers
    and keys at the start of a line outside strings and brackets count, so a ``[[rule]]`` inside a
    multi-line string or array is not taken for a table.
    """
    lines: dict[tuple[Any, ...], int] = {}
    block_values: set[tuple[Any, ...]] = set()
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[Any, ...] = ()
    i, line, depth, at_start, n = 0, 1, 0, True, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line, at_start, i = line + 1, True, i + 1
            continue
        if c in " \t\r":
            i += 1
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if at_start and depth == 0:
            at_start = False
            if match := _ARRAY_HEADER.match(text, i):
                path = _key_path(match.group(1))
                counts[path] = counts.get(path, -1) + 1
                table = (*path, counts[path])
                lines.setdefault(path, line)
                lines[table] = line
                i = match.end()
                continue
            if match := _TABLE_HEADER.match(text, i):
                table = _key_path(match.group(1))
                lines[table] = line
                i = match.end()
                continue
            if match := _KEY.match(text, i):
                key = (*table, *_key_path(match.group(1)))
                lines.setdefault(key, line)
                i = match.end()
                if text.startswith(("'''\n", '"""\n', "'''\r\n", '"""\r\n'), i):
                    block_values.add(key)
                continue
        at_start = False
        if c in "\"'":
            end = _string_end(text, i)
            line += text.count("\n", i, end)
            i = end
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return lines, block_values


def _string_end(text: str, i: int) -> int:
    """The index just past the string literal that starts at ``text[i]``."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        j = i + 3
        while True:
            k = text.find(quote * 3, j)
            if k < 0:
                return len(text)
            if quote == '"':
                backslashes = 0
                while text[k - 1 - backslashes] == "\\":
                    backslashes += 1
                if backslashes % 2:
                    j = k + 1
                    continue
            end = k + 3
            # Up to two quotes just before the closing delimiter belong to the content.
            while end < len(text) and text[end] == quote and end - k < 5:
                end += 1
            return end
    j = i + 1
    while j < len(text) and text[j] not in (quote, "\n"):
        j += 2 if quote == '"' and text[j] == "\\" else 1
    return j + 1
