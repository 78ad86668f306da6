"""publishing.py: many files are stored in batches, one short write each, in file order."""

from pathlib import Path

import pytest

from ark_lattice import publishing
from ark_lattice.errors import UsageError
from ark_lattice.home import Home
from ark_lattice.node import LocalNode


@pytest.fixture
async def node(tmp_path):
    local = await LocalNode.init(Home(tmp_path / "node"), name="n")
    yield local
    await local.close()


def files(root: Path, count: int) -> list[Path]:
    root.mkdir()
    out = []
    for i in range(count):
        path = root / f"f{i:02d}.txt"
        path.write_bytes(b"body %d" % i)
        out.append(path)
    return out


async def test_files_are_stored_in_batches_in_order(node, tmp_path, monkeypatch):
    monkeypatch.setattr(publishing, "BATCH_PACKETS", 3)
    stored_batches: list[int] = []
    put = node.store.put_packets

    async def counting(packets, **kw):
        packets = list(packets)
        stored_batches.append(len(packets))
        return await put(packets, **kw)

    monkeypatch.setattr(node.store, "put_packets", counting)
    heard: list[str] = []
    done = await publishing.publish_files(
        node, files(tmp_path / "docs", 10), topic="docs", kind="note",
        on_published=lambda item: heard.append(item.path.name),
    )
    assert stored_batches == [3, 3, 3, 1]  # the write lock is taken four times, not once
    assert heard == [f"f{i:02d}.txt" for i in range(10)]
    stamps = [item.packet.header.created_at for item in done]
    assert stamps == sorted(set(stamps))  # distinct and in file order, from the shared clock
    assert await node.store.packet_count() == 10
    assert all(item.packet.body == item.path.read_bytes() for item in done)


async def test_an_unreadable_file_stops_after_storing_those_before_it(node, tmp_path, monkeypatch):
    monkeypatch.setattr(publishing, "BATCH_PACKETS", 4)
    paths = files(tmp_path / "docs", 8)
    paths[5].unlink()
    with pytest.raises(UsageError, match=r"5 of 8 file\(s\) published before it"):
        await publishing.publish_files(node, paths, topic="docs", kind="note")
    assert await node.store.packet_count() == 5


async def test_a_batch_is_bounded_in_bytes_too(node, tmp_path, monkeypatch):
    monkeypatch.setattr(publishing, "BATCH_BYTES", 10)
    sizes: list[int] = []
    put = node.store.put_packets

    async def counting(packets, **kw):
        packets = list(packets)
        sizes.append(len(packets))
        return await put(packets, **kw)

    monkeypatch.setattr(node.store, "put_packets", counting)
    await publishing.publish_files(node, files(tmp_path / "docs", 3), topic="docs", kind="note")
    assert sizes == [1, 1, 1]  # each 6-byte body alone: two would pass 10 bytes
