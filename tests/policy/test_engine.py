"""The policy engine: loading (every error names its line), deciding, and the default policy."""

from __future__ import annotations

import hashlib
import textwrap
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ark_lattice.errors import ConfigError, PolicyError, UsageError
from ark_lattice.policy import (
    DEFAULT_POLICY_TEXT,
    VARIABLES,
    Decision,
    Effect,
    FailedCondition,
    Hook,
    Policy,
    Scope,
    bench_decisions,
    engine,
)
from ark_lattice.tiers import TrustTier


def load(text: str) -> Policy:
    return Policy.load(textwrap.dedent(text).lstrip("\n"))


def load_error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        load(text)
    return caught.value


ALLOW_CORE = """
version = 1

[[rule]]
id = "core"
effect = "allow"
hooks = ["inbound_packet"]
condition = 'peer_tier == "core"'
"""


# --- load errors: (policy text, line named, words in the message) --------------------------------

LOAD_ERRORS = {
    "bad toml": (
        """
        version = 1

        [[rule]
        id = "x"
        """,
        3,
        "not valid TOML",
    ),
    "bad toml value": (
        """
        version = 1
        [limits]
        strikes_to_block = five
        """,
        3,
        "not valid TOML",
    ),
    "missing version": (
        """
        [[rule]]
        id = "a"
        effect = "allow"
        hooks = ["query"]
        condition = "true"
        """,
        1,
        "missing version",
    ),
    "wrong version": (
        """
        # a comment first
        version = 2
        """,
        2,
        "version must be 1",
    ),
    "bad cel syntax": (
        """
        version = 1

        [[rule]]
        id = "broken"
        effect = "deny"
        hooks = ["query"]
        condition = "size > "
        """,
        7,
        "rule 'broken' is not valid CEL (column 8 of the expression): mismatched input",
    ),
    "bad cel syntax on the 2nd line of a block condition": (
        """
        version = 1

        [[rule]]
        id = "broken"
        effect = "deny"
        hooks = ["query"]
        condition = '''
        size > 10 &&
          hops < < 3
        '''
        """,
        9,
        "not valid CEL",
    ),
    "unknown variable": (
        """
        version = 1

        [[rule]]
        id = "typo"
        effect = "allow"
        hooks = ["inbound_packet"]
        description = "peer tier misspelt"
        condition = 'peer_teir == "core"'
        """,
        8,
        "rule 'typo' uses unknown variable peer_teir",
    ),
    "unknown variables": (
        """
        version = 1
        [[rule]]
        id = "typo"
        effect = "allow"
        hooks = ["inbound_packet"]
        condition = 'sizes > 1 || ttl < 3'
        """,
        6,
        "unknown variables sizes, ttl",
    ),
    "unknown function": (
        """
        version = 1
        [[rule]]
        id = "fn"
        effect = "deny"
        hooks = ["inbound_packet"]
        condition = 'lengthOf(topic) > 3'
        """,
        6,
        "rule 'fn' calls unknown function lengthOf()",
    ),
    "condition returning an int": (
        """
        version = 1
        [[rule]]
        id = "num"
        effect = "deny"
        hooks = ["inbound_packet"]
        condition = 'size + 1'
        """,
        6,
        "rule 'num' returns int, not bool",
    ),
    "unknown hook": (
        """
        version = 1

        [[rule]]
        id = "h"
        effect = "allow"
        hooks = ["query",
                 "inbound"]
        condition = "true"
        """,
        6,
        "rule 'h' names unknown hook 'inbound'",
    ),
    "unknown effect": (
        """
        version = 1

        [[rule]]
        id = "e"
        effect = "permit"
        hooks = ["query"]
        condition = "true"
        """,
        5,
        "rule 'e' has unknown effect 'permit'",
    ),
    "duplicate id": (
        """
        version = 1

        [[rule]]
        id = "same"
        effect = "allow"
        hooks = ["query"]
        condition = "true"

        [[rule]]
        id = "same"
        effect = "deny"
        hooks = ["query"]
        condition = "false"
        """,
        10,
        "duplicate id 'same'",
    ),
    "duplicate id across rule and rate_limit": (
        """
        version = 1

        [[rate_limit]]
        id = "flood"
        scope = "peer"
        hooks = ["query"]
        rate = 1
        burst = 1

        [[rule]]
        id = "flood"
        effect = "deny"
        hooks = ["query"]
        condition = "false"
        """,
        11,
        "duplicate id 'flood'",
    ),
    "missing condition": (
        """
        version = 1

        [[rule]]
        id = "ok"
        effect = "allow"
        hooks = ["query"]
        condition = "true"

        [[rule]]
        id = "no-condition"
        effect = "allow"
        hooks = ["query"]
        """,
        9,
        "rule 'no-condition' has no condition",
    ),
    "missing id": (
        """
        version = 1
        [[rule]]
        effect = "allow"
        hooks = ["query"]
        condition = "true"
        """,
        2,
        "has no id",
    ),
    "hooks not a list": (
        """
        version = 1
        [[rule]]
        id = "h"
        effect = "allow"
        hooks = "query"
        condition = "true"
        """,
        5,
        "must be a non-empty list of strings",
    ),
    "id not a string": (
        """
        version = 1
        [[rule]]
        id = 7
        effect = "allow"
        hooks = ["query"]
        condition = "true"
        """,
        3,
        "rule id 7 must be",
    ),
    "condition not a string": (
        """
        version = 1
        [[rule]]
        id = "c"
        effect = "allow"
        hooks = ["query"]
        condition = true
        """,
        6,
        "must be a non-empty string of CEL",
    ),
    "description not a string": (
        """
        version = 1
        [[rule]]
        id = "d"
        effect = "allow"
        hooks = ["query"]
        description = 3
        condition = "true"
        """,
        6,
        "description of rule 'd' must be a string",
    ),
    "misspelt key": (
        """
        version = 1
        [[rule]]
        id = "k"
        effect = "allow"
        hooks = ["query"]
        conditon = "true"
        """,
        6,
        "unknown key 'conditon' in rule 'k'",
    ),
    "unknown top-level key": (
        """
        version = 1

        [rules]
        x = 1
        """,
        3,
        "unknown key 'rules'",
    ),
    "rule not an array of tables": (
        """
        version = 1
        rule = "allow everything"
        """,
        2,
        "rule must be an array of tables",
    ),
    "strikes not an int": (
        """
        version = 1

        [limits]
        strikes_to_block = "5"
        """,
        4,
        "strikes_to_block must be an integer",
    ),
    "quarantine negative": (
        """
        version = 1

        [limits]
        strikes_to_block = 5
        alert_quarantine_s = -1
        """,
        5,
        "alert_quarantine_s must be an integer ≥ 0, not -1",
    ),
    "accusers not an int": (
        """
        version = 1

        [limits]
        alert_accusers_to_block = 2.5
        """,
        4,
        "alert_accusers_to_block must be an integer ≥ 0, not 2.5",
    ),
    "unknown limit": (
        """
        version = 1

        [limits]
        alert_quarantine = 10
        """,
        4,
        "unknown key 'alert_quarantine' in [limits]",
    ),
    "unknown scope": (
        """
        version = 1

        [[rate_limit]]
        id = "r"
        scope = "host"
        hooks = ["query"]
        rate = 10
        burst = 10
        """,
        5,
        "rate_limit 'r' has unknown scope 'host'",
    ),
    "rate not a number": (
        """
        version = 1
        [[rate_limit]]
        id = "r"
        scope = "peer"
        hooks = ["query"]
        rate = "fast"
        burst = 10
        """,
        6,
        "rate of rate_limit 'r' must be a positive number",
    ),
    "zero burst": (
        """
        version = 1
        [[rate_limit]]
        id = "r"
        scope = "topic"
        hooks = ["query"]
        rate = 1.5
        burst = 0
        """,
        7,
        "burst of rate_limit 'r' must be an integer",
    ),
    "a [[rule]] inside a string is not a table": (
        '''
        version = 1

        [[rule]]
        id = "first"
        effect = "allow"
        hooks = ["query"]
        description = """
        [[rule]]
        id = "not a rule"
        """
        condition = "true"

        [[rule]]
        id = "second"
        effect = "allow"
        hooks = ["nowhere"]
        condition = "true"
        ''',
        16,
        "unknown hook 'nowhere'",
    ),
}


@pytest.mark.parametrize("case", LOAD_ERRORS, ids=list(LOAD_ERRORS))
def test_load_error_names_line_and_problem(case: str) -> None:
    text, line, words = LOAD_ERRORS[case]
    err = load_error(text)
    assert err.line == line and err.file == "policy.toml"
    assert isinstance(err, ConfigError)  # the CLI's exit code for config errors still applies
    assert str(err).startswith(f"policy.toml line {line}: ")
    assert words in str(err)
    assert "\n" not in str(err)


def test_load_error_names_the_source() -> None:
    with pytest.raises(PolicyError, match=r"^/etc/ark/p\.toml line 1: missing version") as caught:
        Policy.load("", source="/etc/ark/p.toml")
    assert (caught.value.file, caught.value.line) == ("/etc/ark/p.toml", 1)


def test_comprehension_variables_are_not_unknown() -> None:
    policy = load(
        """
        version = 1
        [[rule]]
        id = "any"
        effect = "allow"
        hooks = ["query"]
        condition = '[1, 2, 3].exists(x, x == hops) && ["a"].all(t, t != topic)'
        """
    )
    assert policy.decide(Hook.QUERY, {"hops": 2, "topic": "b"}).allowed


def test_standard_function_without_an_overload_fails_only_at_decision_time() -> None:
    # cel-rust has no string(bool) and says "undefined function" for it: not a load error.
    policy = load(
        """
        version = 1
        [[rule]]
        id = "str"
        effect = "deny"
        hooks = ["query"]
        condition = 'string(is_public_topic) == "true"'
        """
    )
    decision = policy.decide(Hook.QUERY)
    assert not decision.allowed and decision.fired == ("str",) and decision.errors


def test_an_empty_policy_denies_everything() -> None:
    policy = Policy.load("version = 1\n")
    for hook in Hook:
        decision = policy.decide(hook)
        assert not decision.allowed
        assert decision.fired == ()
        assert decision.reason == f"denied by default: no allow rule for {hook} matched"


# --- what a loaded policy holds -------------------------------------------------------------------


def test_loaded_policy_keeps_text_digest_rules_and_limits(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        version = 1

        [limits]
        strikes_to_block = 3

        [[rate_limit]]
        id = "per-topic"
        scope = "peer_topic"
        hooks = ["inbound_packet", "inbound_packet"]
        rate = 5
        burst = 50

        [[rule]]
        id = "core"
        effect = "allow"
        hooks = ["inbound_packet", "query"]
        description = "core peers"
        condition = 'peer_tier == "core"'
        """
    )
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    policy = Policy.from_file(path)
    assert policy.text == text
    assert policy.source == str(path)
    assert policy.digest == hashlib.sha256(text.encode()).hexdigest()
    assert policy.limits.strikes_to_block == 3
    (limit,) = policy.rate_limits
    assert (limit.id, limit.scope, limit.hooks, limit.rate, limit.burst, limit.line) == (
        "per-topic", Scope.PEER_TOPIC, (Hook.INBOUND_PACKET,), 5.0, 50, 6,
    )
    (rule,) = policy.rules
    assert (rule.id, rule.effect, rule.hooks, rule.description, rule.line) == (
        "core", Effect.ALLOW, (Hook.INBOUND_PACKET, Hook.QUERY), "core peers", 13,
    )
    assert rule.condition == 'peer_tier == "core"'
    assert policy.rate_limits_for("query") == ()


def test_from_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file") as caught:
        Policy.from_file(tmp_path / "missing.toml")
    assert (caught.value.file, caught.value.line) == (str(tmp_path / "missing.toml"), None)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"version = 1 # caf\xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8") as caught:
        Policy.from_file(bad)
    assert (caught.value.file, caught.value.line) == (str(bad), None)
    assert isinstance(caught.value, ConfigError)


def test_limits_default_when_absent() -> None:
    limits = Policy.load("version = 1").limits
    assert (limits.strikes_to_block, limits.alert_quarantine_s, limits.alert_accusers_to_block) == (
        5, 3600, 2
    )
    limits = Policy.load("version = 1\n[limits]\nalert_quarantine_s = 0\n").limits
    assert (limits.strikes_to_block, limits.alert_quarantine_s, limits.alert_accusers_to_block) == (
        5, 0, 2
    )
    limits = Policy.load("version = 1\n[limits]\nalert_accusers_to_block = 7\n").limits
    assert limits.alert_accusers_to_block == 7 and limits.alert_quarantine_s == 3600


# --- decisions ------------------------------------------------------------------------------------

RULES = """
version = 1

[[rule]]
id = "core"
effect = "allow"
hooks = ["inbound_packet", "query"]
condition = 'peer_tier == "core"'

[[rule]]
id = "small"
effect = "allow"
hooks = ["inbound_packet"]
condition = "size < 100"

[[rule]]
id = "no-alerts-from-strangers"
effect = "deny"
hooks = ["inbound_packet"]
condition = 'kind == "alert" && peer_tier != "core"'

[[rule]]
id = "hot-peer"
effect = "deny"
hooks = ["inbound_packet"]
condition = "rate_peer > 100.0"

[[rule]]
id = "ratio"
effect = "allow"
hooks = ["query"]
condition = "100 / hops > 10"

[[rule]]
id = "overflow"
effect = "deny"
hooks = ["governance"]
condition = "now + age_s > 0"
"""


@pytest.fixture(scope="module")
def rules() -> Policy:
    return load(RULES)


def test_allowed_by_first_matching_allow_rule(rules: Policy) -> None:
    decision = rules.decide(Hook.INBOUND_PACKET, {"peer_tier": "core", "size": 10})
    assert decision == Decision(
        allowed=True,
        hook=Hook.INBOUND_PACKET,
        fired=("core", "small"),
        reason="allowed by rule 'core'",
        errors=(),
    )


def test_deny_wins_over_allow(rules: Policy) -> None:
    decision = rules.decide("inbound_packet", {"peer_tier": "sandbox", "size": 10, "kind": "alert"})
    assert not decision.allowed
    assert decision.fired == ("small", "no-alerts-from-strangers")
    assert decision.reason == "denied by rule 'no-alerts-from-strangers'"


def test_default_deny_when_no_allow_rule_matches(rules: Policy) -> None:
    decision = rules.decide(Hook.INBOUND_PACKET, {"peer_tier": "external", "size": 500})
    assert not decision.allowed
    assert decision.fired == ()
    assert decision.reason == "denied by default: no allow rule for inbound_packet matched"


def test_rules_apply_only_on_their_hooks(rules: Policy) -> None:
    # "small" is an inbound_packet rule: a small outbound packet has no allow rule at all.
    assert not rules.decide(Hook.OUTBOUND_PACKET, {"peer_tier": "core", "size": 1}).allowed


def test_failing_allow_rule_does_not_match(rules: Policy) -> None:
    decision = rules.decide(Hook.QUERY, {"peer_tier": "external", "hops": 0})  # 100 / 0
    assert not decision.allowed
    assert decision.fired == ()
    assert decision.errors == (FailedCondition("ratio", "division by zero in CEL expression"),)
    assert decision.reason == (
        "denied by default: no allow rule for query matched ('ratio' could not be evaluated)"
    )
    # The same rule allows once it can be evaluated.
    assert rules.decide(Hook.QUERY, {"peer_tier": "external", "hops": 2}).allowed


def test_failing_allow_rule_does_not_hide_another_allow(rules: Policy) -> None:
    decision = rules.decide(Hook.QUERY, {"peer_tier": "core", "hops": 0})
    assert decision.allowed
    assert [e.rule for e in decision.errors] == ["ratio"]


def test_failing_deny_rule_matches(rules: Policy) -> None:
    decision = rules.decide(Hook.GOVERNANCE, {"now": 2**63 - 1, "age_s": 1})
    assert not decision.allowed
    assert decision.fired == ("overflow",)
    assert decision.errors[0].rule == "overflow"
    assert "overflow" in decision.errors[0].message.lower()
    assert decision.reason == (
        "denied by rule 'overflow', whose condition failed to evaluate (fail closed)"
    )


def test_non_bool_result_at_decision_time_fails_closed() -> None:
    policy = load(
        """
        version = 1
        [[rule]]
        id = "maybe"
        effect = "allow"
        hooks = ["query"]
        condition = "hops == 0 ? true : hops"
        """
    )
    assert policy.decide(Hook.QUERY, {"hops": 0}).allowed
    decision = policy.decide(Hook.QUERY, {"hops": 3})
    assert not decision.allowed
    assert decision.errors == (FailedCondition("maybe", "the condition returned int, not bool"),)


def test_inputs_that_cannot_enter_cel_fail_closed(rules: Policy) -> None:
    decision = rules.decide(Hook.INBOUND_PACKET, {"peer_tier": "core", "kind": "\ud800"})
    assert not decision.allowed
    assert {e.rule for e in decision.errors} == {
        "core", "small", "no-alerts-from-strangers", "hot-peer",
    }
    assert decision.fired == ("no-alerts-from-strangers", "hot-peer")


def test_missing_inputs_take_zero_values(rules: Policy) -> None:
    # size defaults to 0 (< 100), peer_tier to "" and rate_peer to 0.0.
    assert rules.decide(Hook.INBOUND_PACKET).fired == ("small",)
    assert rules.decide(Hook.INBOUND_PACKET, {}).allowed


def test_engine_sets_hook_direction_and_public_topic() -> None:
    policy = load(
        """
        version = 1
        [[rule]]
        id = "seen"
        effect = "allow"
        hooks = ["inbound_packet", "outbound_packet", "query", "tier_change", "governance"]
        condition = 'hook + "/" + direction + "/" + (is_public_topic ? "true" : "false") == self_id'
        """
    )
    for hook, direction in [
        ("inbound_packet", "inbound"), ("outbound_packet", "outbound"), ("governance", ""),
    ]:
        assert policy.decide(hook, {"self_id": f"{hook}/{direction}/false"}).allowed
    assert policy.decide("query", {"topic": "public/x", "self_id": "query//true"}).allowed
    assert policy.decide(
        "query", {"direction": "outbound", "topic": "x", "self_id": "query/outbound/false"}
    ).allowed
    # A caller may state is_public_topic; then it is not derived.
    assert policy.decide(
        "query", {"topic": "x", "is_public_topic": True, "self_id": "query//true"}
    ).allowed


def test_inputs_are_typed_and_saturated(rules: Policy) -> None:
    # A StrEnum is its value; an int is a fine double; a huge int saturates instead of turning into
    # a CEL uint or double that no int literal compares with.
    assert rules.decide("inbound_packet", {"peer_tier": TrustTier.CORE}).allowed
    decision = rules.decide("inbound_packet", {"size": 1, "rate_peer": 101})
    assert decision.fired == ("small", "hot-peer")
    decision = rules.decide("inbound_packet", {"size": 10**30, "rate_peer": 10**400})
    assert decision.errors == ()
    assert decision.fired == ("hot-peer",)


@pytest.mark.parametrize(
    ("hook", "inputs", "words"),
    [
        ("inbound", {}, "unknown policy hook 'inbound'"),
        (Hook.QUERY, {"peer": "x"}, "unknown policy input 'peer'"),
        (Hook.QUERY, {"hook": "query"}, "hook is set by the engine"),
        (Hook.QUERY, {"hops": "3"}, "hops must be an int, not str"),
        (Hook.QUERY, {"hops": True}, "hops must be an int, not bool"),
        (Hook.QUERY, {"peer_tier": 3}, "peer_tier must be a string, not int"),
        (Hook.INBOUND_PACKET, {"rate_peer": "fast"}, "rate_peer must be a number, not str"),
    ],
)
def test_misuse_is_a_usage_error(rules: Policy, hook: str, inputs: dict, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        rules.decide(hook, inputs)


def test_decisions_are_frozen(rules: Policy) -> None:
    decision = rules.decide(Hook.QUERY, {"peer_tier": "core"})
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]


# --- the default policy ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> Policy:
    return Policy.default()


def test_default_policy_text_is_the_shipped_file() -> None:
    shipped = resources.files("ark_lattice.policy").joinpath("default.toml").read_text("utf-8")
    assert DEFAULT_POLICY_TEXT == shipped
    policy = Policy.load(DEFAULT_POLICY_TEXT)
    assert policy.limits.strikes_to_block == 5
    assert (policy.limits.alert_quarantine_s, policy.limits.alert_accusers_to_block) == (3600, 2)
    flood, alerts = policy.rate_limits
    assert (flood.scope, flood.rate, flood.burst) == (Scope.PEER, 200.0, 2000)
    assert (alerts.id, alerts.scope, alerts.hooks, alerts.burst) == (
        "alert-author", Scope.AUTHOR, (Hook.ALERT,), 10
    )
    assert alerts.rate * 60 == pytest.approx(5, rel=1e-5)


MIB = 1 << 20
TIER = "tier-changes"
BUNDLE = {"proposal_kind": "policy_bundle"}
FRESH = {"size": 2_000, "age_s": 10, "now": 1_700_000_000, "kind": "note", "topic": "ops/alerts"}
ALERT = {"self_id": "self", "peer_tier": "core", "author_tier": "core", "accused": "villain",
         "severity": "critical", "kind": "alert", "topic": "alerts"}
DEFAULT_CASES = [
    # (hook, inputs, allowed, rule that decided or None for the default deny)
    ("inbound_packet", {**FRESH, "peer_tier": "core"}, True, "core-exchange"),
    ("outbound_packet", {**FRESH, "peer_tier": "core"}, True, "core-exchange"),
    ("query", {"peer_tier": "core", "topic": "ops/alerts"}, True, "core-exchange"),
    ("inbound_packet", {**FRESH, "peer_tier": "core", "size": MIB}, True, "core-exchange"),
    ("inbound_packet", {**FRESH, "peer_tier": "core", "size": MIB + 1}, False, "body-too-large"),
    ("outbound_packet", {**FRESH, "peer_tier": "core", "size": 5 << 20}, False, "body-too-large"),
    ("inbound_packet", {**FRESH, "peer_tier": "core", "age_s": 30 * 86400}, True, "core-exchange"),
    ("inbound_packet", {**FRESH, "peer_tier": "core", "age_s": 30 * 86400 + 1}, False, "too-old"),
    ("inbound_packet", {**FRESH, "peer_tier": "core", "age_s": -300}, True, "core-exchange"),
    ("inbound_packet", {**FRESH, "peer_tier": "core", "age_s": -301}, False, "from-the-future"),
    ("inbound_packet", {**FRESH, "peer_tier": "sandbox"}, True, "sandbox-inbound"),
    ("inbound_packet", {**FRESH, "peer_tier": "sandbox", "size": 2 << 20}, False, "body-too-large"),
    ("outbound_packet", {**FRESH, "peer_tier": "sandbox"}, False, None),
    ("query", {"peer_tier": "sandbox", "topic": "public/news"}, False, None),
    ("query", {"peer_tier": "external", "topic": "public/news"}, True, "external-public-queries"),
    ("query", {"peer_tier": "external", "topic": "ops/alerts"}, False, None),
    ("query", {"peer_tier": "external", "topic": "publicity"}, False, None),
    ("inbound_packet", {**FRESH, "peer_tier": "external", "topic": "public/x"}, False, None),
    ("inbound_packet", {**FRESH, "peer_tier": "unknown"}, False, None),
    ("query", {"peer_tier": "unknown", "topic": "public/news"}, False, None),
    ("inbound_packet", {**FRESH, "peer_tier": "blocked"}, False, "blocked-peers"),
    ("query", {"peer_tier": "blocked", "topic": "public/news"}, False, "blocked-peers"),
    ("tier_change", {"peer_tier": "sandbox", "new_tier": "core", "actor": "operator"}, True, TIER),
    ("tier_change", {"peer_tier": "core", "new_tier": "blocked", "actor": "policy"}, True, TIER),
    ("governance", {"peer_tier": "core", **BUNDLE, "approvals": 3}, True, "core-governance"),
    ("governance", {"peer_tier": "sandbox", **BUNDLE}, False, None),
    ("governance", {"peer_tier": "blocked", **BUNDLE}, False, "blocked-peers"),
    ("alert", {**ALERT, "severity": "warning"}, True, "core-alerts"),
    ("alert", {**ALERT, "severity": "critical"}, True, "core-alerts"),
    ("alert", {**ALERT, "severity": "info"}, False, None),
    ("alert", {**ALERT, "peer_tier": "sandbox"}, False, None),
    ("alert", {**ALERT, "author_tier": "sandbox"}, False, None),
    ("alert", {**ALERT, "author_tier": "unknown"}, False, None),
    ("alert", {**ALERT, "accused": ""}, False, None),
    ("alert", {**ALERT, "accused": "self"}, False, None),
    ("alert", {**ALERT, "author_tier": "unknown", "has_evidence": True}, True, "self-proving-alerts"),
    ("alert", {**ALERT, "severity": "info", "has_evidence": True}, True, "self-proving-alerts"),
    ("alert", {**ALERT, "peer_tier": "sandbox", "has_evidence": True}, False, None),
    ("alert", {**ALERT, "accused": "self", "has_evidence": True}, False, None),
]


@pytest.mark.parametrize(("hook", "inputs", "allowed", "by"), DEFAULT_CASES)
def test_default_policy(
    default: Policy, hook: str, inputs: dict, allowed: bool, by: str | None
) -> None:
    decision = default.decide(hook, inputs)
    assert decision.allowed is allowed
    assert decision.errors == ()
    if by is None:
        assert decision.reason.startswith("denied by default")
    else:
        verb = "allowed" if allowed else "denied"
        assert decision.reason == f"{verb} by rule {by!r}"


def test_bench_decisions_reports_both_rates(default: Policy) -> None:
    result = bench_decisions(default, {**FRESH, "peer_tier": "core"}, 50)
    assert result["hook"] == "inbound_packet"
    assert result["decisions"] == 50
    assert result["rules_evaluated"] == 6
    assert result["engine_per_s"] > 0 and result["bare_per_s"] > 0 and result["eval_only_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["engine_per_s"] / result["bare_per_s"])
    with pytest.raises(UsageError):
        bench_decisions(default, {}, 0)


# --- decide() never raises on inputs of the right types -------------------------------------------

STRESS = """
version = 1

[[rule]]
id = "arith"
effect = "deny"
hooks = ["inbound_packet", "outbound_packet", "query", "tier_change", "governance"]
condition = "now - age_s > size * hops || strikes / hops > approvals % strikes"

[[rule]]
id = "doubles"
effect = "allow"
hooks = ["inbound_packet", "outbound_packet", "query", "tier_change", "governance"]
condition = "rate_peer / rate_topic > 1.5 && rate_peer - rate_topic < 3.0"

[[rule]]
id = "strings"
effect = "allow"
hooks = ["inbound_packet", "query", "governance"]
condition = '''
topic.startsWith(peer_id) || author.matches(kind) || size(new_tier) > hops
|| (is_public_topic && actor + proposal_kind == self_id && peer_tier != direction)
'''
"""

_TEXT = st.one_of(
    st.sampled_from(["", "core", "public/x", "a.*", "("]),
    st.text(st.characters(exclude_categories=()), max_size=20),  # lone surrogates included
)
_VALUES = {
    "string": _TEXT,
    "int": st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers()),
    "double": st.one_of(st.floats(), st.integers(-(2**70), 2**70)),
    "bool": st.booleans(),
}
_INPUTS = st.fixed_dictionaries(
    {},
    optional={name: _VALUES[v.type] for name, v in VARIABLES.items() if name != "hook"},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hook=st.sampled_from(Hook), inputs=_INPUTS, which=st.sampled_from(["stress", "default"]))
def test_decide_never_raises_on_well_typed_inputs(hook: Hook, inputs: dict, which: str) -> None:
    policy = _STRESS if which == "stress" else _DEFAULT
    decision = policy.decide(hook, inputs)
    assert isinstance(decision, Decision)
    assert decision.hook is hook
    denies = {r.id for r in policy.rules if r.effect is Effect.DENY}
    allows = {r.id for r in policy.rules if r.effect is Effect.ALLOW}
    failed = {e.rule for e in decision.errors}
    # Fail closed: a failing deny rule fired; a failing allow rule did not.
    assert failed & denies <= set(decision.fired)
    assert not failed & allows & set(decision.fired)
    fired = set(decision.fired)
    assert decision.allowed == (not fired & denies and bool(fired & allows))


_STRESS = load(STRESS)
_DEFAULT = Policy.default()


def _fresh(policy: Policy, hook: Hook, inputs: dict) -> Decision:
    """The decision evaluated from scratch, bypassing the memo."""
    plan = policy._plans[hook]
    return policy._evaluate(plan, plan.variables(inputs))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    peer_tier=st.sampled_from(["core", "sandbox", "external", "blocked", ""]),
    size=st.integers(-(2**70), 2**70),
    age_s=st.integers(-(10**7), 10**7),
)
def test_remembered_decisions_are_the_evaluated_ones(default: Policy, peer_tier: str, size: int,
                                                     age_s: int) -> None:
    inputs = {"peer_tier": peer_tier, "size": size, "age_s": age_s, "topic": "t", "now": 5}
    for _ in range(2):  # the second answer comes from the memo
        assert default.decide(Hook.INBOUND_PACKET, inputs) == _fresh(default, Hook.INBOUND_PACKET, inputs)


def test_inputs_no_condition_reads_share_a_remembered_decision(default: Policy) -> None:
    plan = default._plans[Hook.INBOUND_PACKET]
    assert default.reads(Hook.INBOUND_PACKET) == plan.needed >= {"peer_tier", "size", "age_s"}
    assert "author" not in plan.needed
    first = default.decide(Hook.INBOUND_PACKET, {"peer_tier": "core", "size": 7, "author": "a"})
    again = default.decide(Hook.INBOUND_PACKET, {"peer_tier": "core", "size": 7, "author": "b"})
    assert again is first and first.allowed
    assert default.decide(Hook.INBOUND_PACKET, {"peer_tier": "blocked", "size": 7}).allowed is False
    with pytest.raises(UsageError, match="unknown policy hook"):
        default.reads("nope")


def test_the_memo_is_bounded(default: Policy) -> None:
    plan = default._plans[Hook.INBOUND_PACKET]
    for age in range(3 * engine._MEMO_SIZE):
        default.decide(Hook.INBOUND_PACKET, {"peer_tier": "core", "age_s": age})
        assert len(plan.memo) <= engine._MEMO_SIZE
    assert default.decide(Hook.INBOUND_PACKET, {"peer_tier": "core", "age_s": 3_000_000}).allowed is False


def test_hooks_that_read_a_double_are_decided_afresh() -> None:
    # -0.0 == 0.0 as a memo key, yet a condition tells them apart: such hooks keep no memo.
    policy = load(textwrap.dedent('''
        version = 1
        [[rule]]
        id = "signed-zero"
        effect = "allow"
        hooks = ["inbound_packet"]
        condition = "1.0 / rate_peer > 0.0"
    '''))
    assert not policy._plans[Hook.INBOUND_PACKET].memoizable
    assert policy.decide(Hook.INBOUND_PACKET, {"rate_peer": 0.0}).allowed is True
    assert policy.decide(Hook.INBOUND_PACKET, {"rate_peer": -0.0}).allowed is False
    assert policy._plans[Hook.INBOUND_PACKET].memo == {}
