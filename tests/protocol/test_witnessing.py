"""The coordinator's side of witnessing (protocol/witnessing.py): who is asked, who is answered,
and what a fork proof does — sans-I/O, with the verdicts witness.py would return."""

from __future__ import annotations

from ark_lattice import ledger, merkle, witness
from ark_lattice.checkpoint import Checkpoint, sign_checkpoint
from ark_lattice.identity import Identity
from ark_lattice.protocol.actions import Audit, RaiseAlert
from ark_lattice.protocol.events import SyncReady, WitnessReplied, WitnessRequested
from ark_lattice.protocol.witnessing import (
    RecordCosignature,
    RequestCosignature,
    SendWitnessReply,
    SendWitnessRequest,
    Witness,
)

from test_coordinator import CORE, PEERS, SANDBOX, T0, coordinator, of, pid, session_with


def note(log: Identity, size: int, tag: bytes) -> str:
    cp = Checkpoint(ledger.checkpoint_origin(log.node_id), size, merkle.leaf_hash(tag))
    return sign_checkpoint(cp, log, ledger.key_name(log.node_id))


def test_a_new_checkpoint_is_offered_to_open_core_peers_only() -> None:
    core = coordinator()
    a = session_with(core, PEERS[0], CORE)
    session_with(core, PEERS[1], SANDBOX)
    core.session_events(a, [SyncReady(True, True)], T0)  # the terms: our requests go to senders
    assert core.checkpoint_made(T0) == [RequestCosignature(a, pid(PEERS[0]))]
    assert core.cosign_request_built(a, b"request") == [SendWitnessRequest(a, b"request")]
    assert core.cosign_request_built(a, None) == []  # no checkpoint yet: nothing to ask


def test_only_core_peers_are_witnessed() -> None:
    core = coordinator()
    a = session_with(core, PEERS[0], CORE)
    s = session_with(core, PEERS[1], SANDBOX)
    assert core.session_events(a, [WitnessRequested(b"req")], T0) == [Witness(a, pid(PEERS[0]), b"req")]
    (reply,) = core.session_events(s, [WitnessRequested(b"req")], T0)
    assert isinstance(reply, SendWitnessReply) and reply.status == 404


def test_a_fork_proof_is_answered_409_and_raised_as_a_self_proving_alert() -> None:
    core = coordinator()
    log = PEERS[0]
    a = session_with(core, log, CORE)
    first, second = note(log, 9, b"one"), note(log, 9, b"two")
    verdict = witness.Verdict(
        witness.Status.CONFLICT, "two roots signed for size 9: a fork", None, 9, first,
        witness.fork_evidence(first, second),
    )
    actions = core.witnessed(a, pid(log), verdict, T0)
    (reply,) = of(actions, SendWitnessReply)
    assert (reply.status, reply.body, reply.note) == (409, b"9\n", first.encode())
    (alarm,) = of(actions, RaiseAlert)
    assert alarm.alert.severity == "critical" and alarm.alert.about == pid(log)
    assert alarm.alert.self_proving()
    assert of(actions, Audit)  # the refusal is in the ledger


def test_a_bad_proof_is_refused_and_audited_without_an_alert() -> None:
    core = coordinator()
    a = session_with(core, PEERS[0], CORE)
    verdict = witness.Verdict(witness.Status.BAD_PROOF, "consistency proof from size 3: no")
    actions = core.witnessed(a, pid(PEERS[0]), verdict, T0)
    assert [r.status for r in of(actions, SendWitnessReply)] == [422]
    assert of(actions, Audit) and not of(actions, RaiseAlert)


def test_a_conflict_is_retried_once_from_the_witness_size() -> None:
    core = coordinator()
    a = session_with(core, PEERS[0], CORE)
    (record,) = core.session_events(a, [WitnessReplied(409, b"5\n", b"")], T0)
    assert record == RecordCosignature(a, pid(PEERS[0]), 409, b"5\n", b"")
    retry = witness.ReplyOutcome(False, 5, "the witness last cosigned size 5")
    assert core.cosignature_recorded(a, pid(PEERS[0]), retry, T0) == [RequestCosignature(a, pid(PEERS[0]), 5)]
    assert core.cosignature_recorded(a, pid(PEERS[0]), retry, T0) == []  # not a loop
    bad = witness.ReplyOutcome(False, None, "a cosignature that does not verify", bad=True)
    (audit,) = core.cosignature_recorded(a, pid(PEERS[0]), bad, T0)
    assert isinstance(audit, Audit) and audit.records[0]["allowed"] is False
    done = witness.ReplyOutcome(True, None, "cosigned size 7")
    assert core.cosignature_recorded(a, pid(PEERS[0]), done, T0) == []
    assert core.cosignature_recorded(a, pid(PEERS[0]), retry, T0) == [RequestCosignature(a, pid(PEERS[0]), 5)]


# --- the session: the frames travel, and an answer nobody asked for is a strike -------------------


def test_a_witness_request_and_its_reply_cross_a_session() -> None:
    from ark_lattice.protocol.events import Misbehaviour

    from test_session import open_pair

    pair = open_pair()
    pair.a.session.send_witness_request(b"old 0\n\nnote", pair.now)
    pair.settle()
    assert pair.b.of(WitnessRequested) == [WitnessRequested(b"old 0\n\nnote")]
    pair.b.session.send_witness_reply(200, b"cosignature line\n", b"", pair.now)
    pair.settle()
    assert pair.a.of(WitnessReplied) == [WitnessReplied(200, b"cosignature line\n", b"")]
    assert not pair.a.of(Misbehaviour)
    # A second reply with no request outstanding: refused as unsolicited.
    pair.b.session.send_witness_reply(200, b"again\n", b"", pair.now)
    pair.settle()
    assert pair.a.codes() == ["unsolicited"]
    assert len(pair.a.of(WitnessReplied)) == 1


def test_a_cosignature_is_answered_200_with_its_line_and_nothing_else() -> None:
    core = coordinator()
    a = session_with(core, PEERS[0], CORE)
    line = "\u2014 ark-lattice-witness/x AAAA\n"
    verdict = witness.Verdict(witness.Status.OK, "consistent with size 3", cosignature=line)
    assert core.witnessed(a, pid(PEERS[0]), verdict, T0) == [SendWitnessReply(a, 200, line.encode(), b"")]
