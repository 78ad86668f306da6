"""Membership and dial-target listings: pure functions over store rows and the node's snapshot."""

import json
import re
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from ark_lattice.membership import classify_sightings, endpoint_listing
from ark_lattice.tiers import TrustTier
from ark_lattice.timestamps import RFC3339 as RFC3339_FORMAT
from ark_lattice.timestamps import rfc3339


@dataclass
class Peer:
    id: str
    tier: TrustTier
    name: str
    endpoints: tuple[str, ...]


def row(node_id, *endpoints, verified=True):
    return {"node_id": node_id, "endpoints": list(endpoints), "verified": verified}


def test_sightings_are_members_foreign_or_unchecked():
    rows = [
        row("m", "ws://10.0.0.1:7467"),
        row("f1", "ws://10.0.0.2:7467"),
        row("f2", "ws://10.0.0.3:7467"),
        row("u", "ws://10.0.0.4:7467"),
        row("r", "ws://10.0.0.2:7467", verified=False),
    ]
    out = classify_sightings(
        rows, members={"m"}, foreign_urls={"ws://10.0.0.2:7467"}, foreign_hosts={"10.0.0.3", "10.0.0.1"}
    )
    assert [r["federation"] for r in out] == ["member", "foreign", "foreign", "unchecked", "unchecked"]
    assert out[0]["node_id"] == "m" and "federation" not in rows[0]  # the input is left alone


def test_endpoints_show_source_result_and_next_attempt():
    rows = [("ws://h:1", None, "operator", 1_000), ("ws://h:2", "p", "invite", 2_000)]
    peers = [Peer("p", TrustTier.CORE, "site-p", ("ws://h:2", "ws://h:3")),
             Peer("q", TrustTier.UNKNOWN, "site-q", ("ws://h:4",))]
    stopped = {i["url"]: i for i in endpoint_listing(rows, peers, targets=None, connections=None)}
    assert stopped["ws://h:1"]["source"] == "operator" and stopped["ws://h:1"]["added_at"] == rfc3339(1)
    assert stopped["ws://h:3"]["source"] == "manifest" and stopped["ws://h:3"]["peer"] == "p"
    assert stopped["ws://h:2"]["last_result"] == "the node is not running"
    assert stopped["ws://h:4"]["dialled"] is False
    assert stopped["ws://h:4"]["last_result"] == "not dialled: the peer's tier is unknown"

    targets = [
        {"url": "ws://h:1", "dialling": False, "dials": 3, "foreign": True, "blocked_by_peer": False,
         "last_error": "x", "next_attempt": 1_800_000_000.0},
        {"url": "ws://h:2", "dialling": True, "dials": 1, "foreign": False, "blocked_by_peer": False,
         "last_error": None, "next_attempt": 0.0},
        {"url": "ws://h:3", "dialling": False, "dials": 2, "foreign": False, "blocked_by_peer": False,
         "last_error": "refused", "next_attempt": 1_800_000_000.0},
    ]
    conns = [{"role": "initiator", "state": "open", "remote": "ws://h:2", "peer": "p"}]
    running = {i["url"]: i for i in endpoint_listing(rows, peers, targets=targets, connections=conns)}
    assert running["ws://h:1"]["last_result"] == "in another federation"
    assert running["ws://h:1"]["next_attempt"] == "2027-01-15T08:00:00.000Z"
    assert running["ws://h:2"]["last_result"] == "connected"
    assert running["ws://h:3"]["last_result"] == "refused" and running["ws://h:3"]["dials"] == 2

RFC3339 = RFC3339_FORMAT.pattern


@given(
    added=st.integers(min_value=0, max_value=4_102_444_800_000),
    next_attempt=st.floats(min_value=1.0, max_value=4_102_444_800.0),
    dials=st.integers(min_value=0, max_value=10),
    error=st.one_of(st.none(), st.text(max_size=20)),
)
def test_every_endpoint_item_is_json_with_rfc3339_times(added, next_attempt, dials, error):
    rows = [("ws://h:1", None, "operator", added)]
    target = {"url": "ws://h:1", "dialling": False, "dials": dials, "foreign": False,
              "blocked_by_peer": False, "last_error": error, "next_attempt": next_attempt}
    (item,) = json.loads(json.dumps(endpoint_listing(rows, [], targets=[target], connections=[])))
    assert re.match(RFC3339, item["added_at"]) and re.match(RFC3339, item["next_attempt"])
    assert isinstance(item["last_result"], str) and item["last_result"]
