"""Publishing many packets at once (``packets publish DIR``): batch, commit, release.

A CLI writer shares the ledger with a running node, and SQLite has one write lock. So the files
are read and the packets signed outside any transaction, and the lock is held only for two short
writes per batch: reserving the batch's timestamps (the hybrid clock is shared by every process on
the ledger) and storing the batch with its events. Between batches the lock is free, so the node's
own writes wait at most one batch, however many files are published. A batch is at most
:data:`BATCH_PACKETS` packets and :data:`BATCH_BYTES` bytes of bodies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ark_lattice.errors import UsageError
from ark_lattice.packet import Packet

if TYPE_CHECKING:
    from ark_lattice.node import LocalNode

__all__ = ["BATCH_BYTES", "BATCH_PACKETS", "Published", "publish_files"]

BATCH_PACKETS = 256
BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Published:
    packet: Packet
    path: Path
    size: int


async def publish_files(
    node: LocalNode,
    files: Sequence[Path],
    *,
    topic: str,
    kind: str,
    depends: Sequence[bytes] = (),
    supersedes: bytes | None = None,
    meta: dict[str, Any] | None = None,
    on_reading: Callable[[Path], None] = lambda _: None,
    on_published: Callable[[Published], None] = lambda _: None,
) -> list[Published]:
    """One packet per file, stored batch by batch; ``on_reading`` hears of each file as it is
    read, ``on_published`` of each packet once it is durable.

    A file that cannot be read stops the run with a :class:`UsageError` after the files before it
    are stored (they are in the ledger; the message says how many).
    """
    done: list[Published] = []
    pending: list[tuple[Path, bytes]] = []
    pending_bytes = 0

    async def flush() -> None:
        nonlocal pending, pending_bytes
        if pending:
            for item in await _store_batch(node, pending, topic, kind, depends, supersedes, meta):
                done.append(item)
                on_published(item)
        pending, pending_bytes = [], 0

    for path in files:
        on_reading(path)
        try:
            body = path.read_bytes()
        except OSError as exc:
            await flush()
            raise UsageError(
                f"cannot read {path}: {exc.strerror} "
                f"({len(done)} of {len(files)} file(s) published before it)"
            ) from None
        if pending and (len(pending) >= BATCH_PACKETS or pending_bytes + len(body) > BATCH_BYTES):
            await flush()
        pending.append((path, body))
        pending_bytes += len(body)
    await flush()
    return done


async def _store_batch(
    node: LocalNode,
    batch: Sequence[tuple[Path, bytes]],
    topic: str,
    kind: str,
    depends: Sequence[bytes],
    supersedes: bytes | None,
    meta: dict[str, Any] | None,
) -> list[Published]:
    store = node.store
    async with store.transaction():  # short: a few statements per packet, no signing
        now = store.now_ms()
        stamps = [await store.next_timestamp(now) for _ in batch]
    packets = [
        Packet.create(
            node.identity, topic=topic, kind=kind, body=body, created_at=stamp,
            depends=tuple(depends), supersedes=supersedes, meta=meta,
        )
        for (_, body), stamp in zip(batch, stamps, strict=True)
    ]
    await store.put_packets(packets)
    return [Published(p, path, len(body)) for p, (path, body) in zip(packets, batch, strict=True)]
