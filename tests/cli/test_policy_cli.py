import json

from ark_lattice.policy import DEFAULT_POLICY_TEXT

DENY_X = DEFAULT_POLICY_TEXT + '''
[[rule]]
id = "no-x"
effect = "deny"
hooks = ["inbound_packet", "outbound_packet"]
condition = 'topic == "x"'
'''


def test_init_writes_the_default_policy(cli, home):
    cli("init")
    assert (home / "policy.toml").read_text() == DEFAULT_POLICY_TEXT
    shown = cli.json("policy", "show")
    assert {r["id"] for r in shown["rules"]} >= {"core-exchange", "sandbox-inbound", "too-old"}
    assert shown["strikes_to_block"] == 5


def test_check_names_the_bad_line(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'version = 1\n\n[[rule]]\nid = "r"\neffect = "allow"\nhooks = ["query"]\ncondition = "size >"\n'
    )
    result = cli("policy", "check", str(bad), ok=False)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {bad} line 7:")
    assert len(result.stderr.strip().splitlines()) == 1
    for text, what in [
        ("version = 1\n[[rule]\n", "line 2"),
        ('version = 1\n[[rule]]\nid = "r"\neffect = "allow"\nhooks = ["nope"]\ncondition = "true"\n', "hook"),
        (
            'version = 1\n[[rule]]\nid = "r"\neffect = "allow"\nhooks = ["query"]\n'
            'condition = "colour == 1"\n',
            "colour",
        ),
    ]:
        bad.write_text(text)
        assert what in cli("policy", "check", str(bad), ok=False).stderr


def test_dry_run_prints_decision_and_rules(cli, tmp_path, home):
    cli("init")
    cases = tmp_path / "in.json"
    cases.write_text(json.dumps([
        {"hook": "inbound_packet", "peer_tier": "core", "topic": "a", "size": 10},
        {"hook": "inbound_packet", "peer_tier": "core", "topic": "a", "size": 2_000_000},
        {"hook": "query", "peer_tier": "external", "topic": "lab/x"},
    ]))
    out = cli.json("policy", "test", str(home / "policy.toml"), str(cases))
    assert [r["allowed"] for r in out] == [True, False, False]
    assert out[1]["fired"] == ["core-exchange", "body-too-large"]
    human = cli("policy", "test", str(home / "policy.toml"), str(cases)).stdout
    assert "deny (core-exchange, body-too-large)" in human


def test_set_records_an_event_and_a_bad_file_changes_nothing(cli, tmp_path, home):
    cli("init")
    good = tmp_path / "p.toml"
    good.write_text(DENY_X)
    before = cli.json("policy", "show")["digest"]
    cli("policy", "set", str(good))
    after = cli.json("policy", "show")["digest"]
    assert after != before
    [event] = cli.json("ledger", "log", "--kind", "policy.set")
    assert event["data"]["digest"] == after
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n[[rule]]\nid = 1\n")
    assert "line" in cli("policy", "set", str(bad), ok=False).stderr
    assert cli.json("policy", "show")["digest"] == after
    assert (home / "policy.toml").read_text() == DENY_X


def test_tier_changes_are_decided_by_policy_and_audited(cli, tmp_path):
    cli("init")
    strict = tmp_path / "p.toml"
    strict.write_text(DEFAULT_POLICY_TEXT.replace(
        'description = "The operator, alerts and policy may move peers between tiers."\ncondition = "true"',
        'description = "Nobody is promoted to core."\ncondition = \'new_tier != "core"\'',
    ))
    cli("policy", "set", str(strict))
    peer = "a" * 52
    cli("peers", "add", peer, "--tier", "sandbox")
    refused = cli("peers", "trust-tier", peer[:8], "core", ok=False)
    assert refused.exit_code == 2 and "policy refuses" in refused.stderr
    assert cli.json("peers", "show", peer[:8])["tier"] == "sandbox"
    trail = cli.json("audit", "--hook", "tier_change")
    assert [d["allowed"] for d in trail] == [False, True]  # newest first
    assert cli.json("audit", "--decision", "deny")[0]["subject"] == "core"
    assert len(cli.json("audit", "--peer", peer[:6], "--since", "1h")) == 2
    assert cli.json("audit", "--since", "2000-01-01T00:00:00") == trail


def test_the_per_peer_budgets_are_policy_keys_shown_checked_and_set(cli, tmp_path, home):
    cli("init")
    limits = cli.json("policy", "show")["limits"]
    assert limits["decode_max_items"] == 16384 and limits["recon_max_ranges"] == 20000
    assert limits["audit_summary_s"] == 300
    low = tmp_path / "low.toml"
    low.write_text(DEFAULT_POLICY_TEXT.replace("recon_max_ranges = 20000", "recon_max_ranges = 10"))
    line = DEFAULT_POLICY_TEXT.splitlines().index("recon_max_ranges = 20000") + 1
    result = cli("policy", "check", str(low), ok=False)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {low} line {line}: recon_max_ranges must be an integer ≥ 10000, not 10"
    )
    tighter = tmp_path / "tighter.toml"
    tighter.write_text(DEFAULT_POLICY_TEXT.replace("decode_max_depth = 8", "decode_max_depth = 5"))
    cli("policy", "set", str(tighter))
    assert cli.json("policy", "show")["limits"]["decode_max_depth"] == 5
