"""The sightings table: what passes to the federation, what is dropped, and what discover lists."""

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.discovery import sightings as sg
from ark_lattice.discovery.announcement import Announcement, SignedAnnouncement
from ark_lattice.discovery.sightings import Outcome, Sightings
from ark_lattice.encoding import Purpose
from ark_lattice.identity import Identity

ME, PEER, MALLORY = Identity.generate(), Identity.generate(), Identity.generate()
NOW = 1_800_000_000.0


def beacon(identity=PEER, endpoints=("ws://10.231.0.2:7467",), now=NOW, name="bravo"):
    a = Announcement.build(identity.node_id, list(endpoints), 7467, now=now, name=name)
    return a.sign(identity).to_datagram()


def test_a_peer_passes_once_then_repeats_quietly_then_refreshes():
    s = Sightings(ME.node_id)
    first = s.hear("beacon", "10.231.0.2", beacon(), NOW)
    assert first.outcome is Outcome.NEW and first.outcome.passes
    assert first.announcement is not None and first.announcement.node_id == PEER.node_id
    assert s.hear("beacon", "10.231.0.2", beacon(), NOW + 1).outcome is Outcome.REPEATED
    later = NOW + sg.REPORT_INTERVAL + 1
    assert s.hear("beacon", "10.231.0.2", beacon(now=later), later).outcome is Outcome.REFRESHED


def test_the_same_peer_by_another_carrier_is_not_new_but_is_listed_twice():
    s = Sightings(ME.node_id)
    props = SignedAnnouncement.from_datagram(beacon()).to_txt()
    assert s.hear("beacon", "10.231.0.2", beacon(), NOW).outcome is Outcome.NEW
    assert s.hear("mdns", "x._ark-lattice._tcp.local.", props, NOW).outcome is Outcome.REPEATED
    rows = s.rows(NOW)
    assert {r["source"] for r in rows} == {"beacon", "mdns"} and all(r["verified"] for r in rows)


def test_changed_endpoints_pass_and_an_older_announcement_is_a_replay():
    s = Sightings(ME.node_id)
    s.hear("beacon", "10.231.0.2", beacon(now=NOW - 100), NOW)
    moved = s.hear("beacon", "10.231.0.2", beacon(endpoints=["ws://10.231.0.9:7467"]), NOW)
    assert moved.outcome is Outcome.CHANGED
    assert moved.announcement is not None and moved.announcement.endpoints == ("ws://10.231.0.9:7467",)
    replay = s.hear("beacon", "10.231.0.2", beacon(now=NOW - 100), NOW + 1)
    assert replay.outcome is Outcome.OUTDATED
    assert s.verified(NOW + 1)[str(PEER.node_id)].endpoints == ("ws://10.231.0.9:7467",)


def test_ours_is_ignored_and_forgeries_are_rejected_and_listed():
    s = Sightings(ME.node_id)
    assert s.hear("beacon", "10.231.0.1", beacon(ME), NOW).outcome is Outcome.OURS
    a = Announcement.build(MALLORY.node_id, ["ws://10.231.0.66:7467"], 7467, now=NOW)
    forged = SignedAnnouncement(a, PEER.sign(Purpose.BEACON, a.encode()))
    heard = s.hear("beacon", "10.231.0.66", forged.to_datagram(), NOW)
    assert heard.outcome is Outcome.REJECTED and "signature" in heard.reason
    props = forged.to_txt()
    assert s.hear("mdns", "evil._ark-lattice._tcp.local.", props, NOW).outcome is Outcome.REJECTED
    expired = s.hear("beacon", "10.231.0.2", beacon(now=NOW - 7200), NOW)
    assert expired.outcome is Outcome.REJECTED and "expired" in expired.reason
    rows = s.rows(NOW)
    assert not any(r["verified"] for r in rows)
    assert {(r["source"], r["node_id"]) for r in rows if "signature" in r["reason"]} == {
        ("beacon", str(MALLORY.node_id)),
        ("mdns", str(MALLORY.node_id)),
    }
    assert s.verified(NOW) == {}


def test_a_flood_from_one_sender_is_throttled_before_parsing_and_others_still_pass():
    s = Sightings(ME.node_id)
    outcomes = [s.hear("beacon", "10.231.0.66", b"junk", NOW).outcome for _ in range(50)]
    assert outcomes.count(Outcome.REJECTED) == sg.SENDER_BURST
    assert outcomes.count(Outcome.THROTTLED) == 50 - sg.SENDER_BURST
    assert s.rows(NOW)[0]["count"] == sg.SENDER_BURST
    assert s.hear("beacon", "10.231.0.2", beacon(), NOW).outcome is Outcome.NEW
    assert s.hear("beacon", "10.231.0.66", b"junk", NOW + 1).outcome is Outcome.REJECTED  # refilled


def test_a_stranger_minting_node_ids_cannot_fill_the_peer_table_at_once():
    s = Sightings(ME.node_id)
    strangers = [Identity.generate() for _ in range(int(sg.NEW_BURST) + 10)]
    outcomes = [s.hear("beacon", f"10.0.0.{i}", beacon(x), NOW).outcome for i, x in enumerate(strangers)]
    assert outcomes.count(Outcome.NEW) == sg.NEW_BURST
    assert outcomes.count(Outcome.THROTTLED) == 10
    # Held back, not forgotten: the next announcement of a held-back node passes once there is room.
    later = NOW + 1 / sg.NEW_RATE
    assert s.hear("beacon", "10.0.1.1", beacon(strangers[-1], now=later), later).outcome is Outcome.NEW
    # Nodes already known are never held back.
    assert s.hear("beacon", "10.0.0.0", beacon(strangers[0]), later).outcome is Outcome.REPEATED


def test_rejections_and_nodes_are_bounded():
    s = Sightings(ME.node_id)
    for i in range(sg.MAX_REJECTIONS * 2):
        s.hear("beacon", f"10.0.{i // 256}.{i % 256}", b"junk", NOW + i)
    assert len([r for r in s.rows(NOW) if not r["verified"]]) == sg.MAX_REJECTIONS


def test_expired_sightings_leave_the_listing_and_goodbyes_mark_absent():
    s = Sightings(ME.node_id)
    props = SignedAnnouncement.from_datagram(beacon()).to_txt()
    s.hear("mdns", "p._ark-lattice._tcp.local.", props, NOW)
    s.gone("mdns", "p._ark-lattice._tcp.local.")
    assert s.rows(NOW)[0]["present"] is False
    assert s.rows(NOW + 3600) == []


def test_txt_rejections_show_the_claimed_id_without_trusting_it():
    s = Sightings(ME.node_id)
    props = {b"id": b"claimed-but-garbage", b"sig": base64.b64encode(bytes(64))}
    assert s.hear("mdns", "junk._ark-lattice._tcp.local.", props, NOW).outcome is Outcome.REJECTED
    assert s.rows(NOW)[0]["node_id"] == "claimed-but-garbage"


hearings = st.tuples(st.sampled_from(["beacon", "mdns"]), st.integers(0, 3), st.binary(max_size=300))


@settings(max_examples=300)
@given(st.lists(hearings, max_size=30))
def test_nothing_unverified_ever_passes(events):
    s = Sightings(ME.node_id)
    for source, sender, data in events:
        raw = data if source == "beacon" else {b"id": data, b"sig": data}
        heard = s.hear(source, str(sender), raw, NOW)
        assert not heard.outcome.passes
    assert s.verified(NOW) == {}
