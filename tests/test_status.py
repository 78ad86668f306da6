"""What two status snapshots tell: the catch-up of `federation sync --wait`."""

from ark_lattice.status import catch_up


def conn(role="initiator", *, packets_in=0, wanting=0, syncing=False, last_sync=None, state="open",
         remote="127.0.0.1:1", flows=True):
    return {"role": role, "remote": remote, "state": state, "packets_in": packets_in, "wanting": wanting,
            "syncing": syncing, "last_sync": last_sync, "sends": flows, "receives": flows}


def test_a_catch_up_counts_what_arrived_since_it_started_and_what_is_still_wanted():
    first = {"connections": [conn(packets_in=10)]}
    running = {"connections": [conn(packets_in=25, wanting=40, syncing=True, last_sync=90.0)]}
    state = catch_up(first, running, since=100.0)
    assert (state.received, state.pending, state.done) == (15, 40, False)


def test_it_is_done_only_when_every_session_we_initiated_reconciled_since_and_nothing_is_pending():
    first = {"connections": [conn(packets_in=10)]}
    assert not catch_up(first, {"connections": [conn(packets_in=10, last_sync=99.0)]}, since=100.0).done
    assert not catch_up(first, {"connections": [conn(last_sync=101.0, wanting=1)]}, since=100.0).done
    finished = catch_up(first, {"connections": [conn(packets_in=65, last_sync=101.0)]}, since=100.0)
    assert (finished.received, finished.pending, finished.done) == (55, 0, True)


def test_sessions_the_peer_drives_or_where_nothing_flows_are_not_waited_for():
    first: dict[str, list[dict[str, object]]] = {"connections": []}
    others = [
        conn("responder", remote="a"), conn(remote="b", flows=False), conn(remote="c", state="handshake")
    ]
    assert catch_up(first, {"connections": others}, since=100.0).done


def test_a_new_session_at_the_same_address_counts_from_zero():
    first = {"connections": [conn(packets_in=500)]}
    assert catch_up(first, {"connections": [conn(packets_in=20, last_sync=101.0)]}, since=100.0).received == 0
