from ark_lattice.identity import Identity
from ark_lattice.packet import Packet
from ark_lattice.protocol.intake import Intake

AUTHOR = Identity.generate()


def pkt(n, *deps):
    return Packet.create(AUTHOR, topic="t", kind="note", body=b"%d" % n, created_at=n,
                         depends=tuple(d.id for d in deps))


def test_a_batch_is_ordered_dependencies_first():
    a = pkt(1)
    b = pkt(2, a)
    c = pkt(3, b, a)
    admission = Intake().admit([c, b, a], held=set())
    assert [p.id for p in admission.ready] == [a.id, b.id, c.id]
    assert admission.missing == set()


def test_a_packet_waits_for_a_missing_dependency_and_it_is_asked_for_once():
    a, b = pkt(1), pkt(2)
    c = pkt(3, a, b)
    intake = Intake()
    first = intake.admit([c], held={a.id})  # a is held already, b is not
    assert first.ready == [] and first.missing == {b.id}
    again = intake.admit([pkt(4)], held=set())
    assert again.missing == set()  # b is not asked for a second time
    assert intake.stored([b.id]) == [c]  # a was held before: only b was lacking
    assert len(intake) == 0


def test_waiting_packets_are_bounded():
    intake = Intake(max_waiting=3)
    ghost = pkt(0)
    for i in range(1, 6):
        intake.admit([pkt(i, ghost)], held=set())
    assert len(intake) == 3
