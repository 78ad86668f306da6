"""`federation invite`, `invites` and `join` with no node running: one clear sentence for bad input."""

import json

from ark_lattice.protocol.invites import Invite


def test_an_invite_made_offline_names_the_configured_port_and_can_be_revoked(cli):
    cli("init", "--name", "site-a")
    doc = cli.json("federation", "invite", "--expires", "2h", "--uses", "3", "--endpoint", "ws://192.0.2.1:7467")
    assert doc["schema"] == "ark-lattice.invite/1" and doc["node_running"] is False
    invite = Invite.parse(doc["invite"])
    assert invite.endpoints == ("ws://192.0.2.1:7467",) and doc["uses"] == 3
    assert invite.inviter.key.hex() and str(invite.inviter) == cli.json("identity", "show")["node_id"]
    human = cli("federation", "invite", "--qr", "--endpoint", "ws://192.0.2.1:7467").stdout
    assert "the node is not running" in human and "ARK-INVITE:" in human and "█" in human
    listing = cli.json("federation", "invites")
    assert [i["state"] for i in listing] == ["open", "open"]
    assert "psk" not in json.dumps(listing)
    cli("federation", "invites", "revoke", doc["id"][:10])
    assert len(cli.json("federation", "invites")) == 1
    private = (cli.home / "invites.json").stat().st_mode & 0o777
    assert private == 0o600


def test_bad_invite_options_and_invites_are_one_sentence(cli):
    cli("init", "--name", "site-b")
    for args, words in (
        (("federation", "invite", "--expires", "soon"), "not a duration"),
        (("federation", "invite", "--expires", "90d"), "at most 30 days"),
        (("federation", "invite", "--tier", "blocked", "--endpoint", "ws://h:1"), "blocked tier"),
        (("federation", "invite", "--tier", "gold"), "unknown trust tier"),
        (("federation", "invite", "--endpoint", "http://h:1"), "ws://HOST:PORT"),
        (("federation", "join", "hello"), "not an invite"),
        (("federation", "invites", "revoke", "ffff"), "no invite"),
        (("federation", "endpoints", "remove", "ws://h:1"), "does not dial"),
        (("peers", "accept", "zz"), "no peer"),
    ):
        result = cli(*args, ok=False)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
