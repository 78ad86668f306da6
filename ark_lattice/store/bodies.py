"""Large packet bodies as files beside the ledger (issue 16; DESIGN §8).

A body of at least :data:`BODY_FILE_MIN` bytes is kept in ``<ledger>-bodies/<2 hex>/<64 hex id>``
and its packet row holds ``body = NULL``. Measured on this machine (``/work/wt/blob.py``), 1 MiB
bodies reached ~270/s as files (then written, fsynced, renamed, directory fsynced) against ~174/s as
blobs in a rowid table and ~132/s in the old WITHOUT ROWID table, because a blob in SQLite is
written twice (WAL, then checkpoint); below 64 KiB rows win (sqlite.org/intern-v-extern-blob.html).
The directory is named like SQLite's own ``-wal`` and ``-shm`` so that a backup at PATH keeps its
bodies at ``PATH-bodies``.

The rule that keeps files and rows consistent, crash or not:

- a body file is written under its name, fsynced and its directory fsynced inside the write
  transaction, under SQLite's write lock, **before** the row that names it: a committed row always
  finds its whole file. No temporary name and rename are needed for that: a file is named by a
  row only once it is durable in full, so a torn file (a writer killed mid-write) is never named,
  and it is removed as an orphan like any unnamed file; the rename cost a syscall and a directory
  update per body and bought nothing the commit does not;
- a transaction that rolls back removes the files it wrote (store.py);
- so the only files no row names ("orphans") are those of a writer killed between its file and
  its commit, whole or torn (and ``*.tmp`` files of older versions, which wrote a temporary name
  first). The store removes them when it opens for writing, under the write lock (no other writer
  can be between a file and its commit then). ``ledger verify``, a reader, reports them and leaves
  them; it also checks every named file's bytes against the packet's body hash.

Files are never changed once their rows commit, and packets are never deleted, so a reader (a
listing, a peer's transfer, ``ledger backup``) can read a body file without a lock.

The files of a batch are written one after the other on one thread, each one's writeback started
as soon as it is written (``posix_fadvise(DONTNEED)`` on dirty pages starts it and drops nothing),
then fsynced together: the disk takes them side by side, as the four writer threads this replaced
had it do, without their hand-offs. Once durable, a body's pages leave the page cache (the same
call on clean pages): bodies are read rarely (a peer's transfer, a listing that shows them) and
would push the ledger's own pages out of the cache, and a new body written into pages the last
one freed costs the kernel far less than fresh ones. Measured with ``bench sync --large-packets
300`` on the 2-core VM, in the same run (issue 16): receiver CPU 6.8 -> 4.4 ms per 1 MiB packet,
ingest 139 -> 215 packets/s (dropping the pages alone: 196/s; one thread without dropping: 153/s).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ark_lattice.errors import LedgerCorrupt, LedgerError

__all__ = ["BODY_FILE_MIN", "BodyFiles", "bodies_dir"]

BODY_FILE_MIN = 64 * 1024
#: Files of one batch open at once (a batch may hold a couple of thousand 64 KiB bodies).
OPEN_AT_ONCE = 64
_HEX = frozenset("0123456789abcdef")


def bodies_dir(ledger: Path) -> Path | None:
    """Where the ledger at ``ledger`` keeps its body files; None for an in-memory ledger (the
    simulator's), which keeps every body in its row."""
    if str(ledger) == ":memory:" or str(ledger).startswith("file::memory:"):
        return None
    return ledger.with_name(ledger.name + "-bodies")


def _is_id(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


class BodyFiles:
    """The body files of one ledger. Every method blocks (disk I/O): the store calls them in a
    worker thread, except for single small reads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, packet_id: bytes) -> Path:
        name = packet_id.hex()
        return self.root / name[:2] / name

    def write(self, bodies: Sequence[tuple[bytes, bytes]], written: list[Path]) -> None:
        """Make each ``(id, body)`` durable at its name, appending every path to ``written`` as
        soon as it exists, so that a rollback can remove it even if this fails half-way."""
        dirs: set[Path] = set()
        try:
            for packet_id, _ in bodies:
                directory = self.path(packet_id).parent
                if directory not in dirs and not directory.is_dir():
                    self._make_dir(directory)
                dirs.add(directory)
            for start in range(0, len(bodies), OPEN_AT_ONCE):
                self._write_some(bodies[start : start + OPEN_AT_ONCE], written)
            for directory in dirs:  # the new names are durable once their directories are
                _fsync_dir(directory)
        except OSError as exc:
            raise _write_error(exc, self.root) from None

    def _write_some(self, bodies: Sequence[tuple[bytes, bytes]], written: list[Path]) -> None:
        """Write the files, then fsync them: their writeback runs side by side meanwhile."""
        fds: list[int] = []
        try:
            for packet_id, body in bodies:
                fds.append(self._write_one(packet_id, body, written))
            for fd in fds:
                os.fsync(fd)
                _drop_cached(fd)  # durable now: its pages leave the cache (module doc)
        finally:
            for fd in fds:
                os.close(fd)

    def _write_one(self, packet_id: bytes, body: bytes, written: list[Path]) -> int:
        """Create the file of ``packet_id`` holding ``body``; its writeback has started. Returns
        the open descriptor, for the caller to fsync and close."""
        path = self.path(packet_id)
        written.append(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
            _drop_cached(fd)  # dirty pages are not dropped: this starts their writeback
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read(self, packet_id: bytes) -> bytes:
        """The body of ``packet_id``, whose row says it is in a file."""
        path = self.path(packet_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise LedgerCorrupt(
                f"packet {packet_id.hex()}", f"its body file {path} is missing"
            ) from None
        except OSError as exc:
            raise LedgerError(f"cannot read the body file {path}: {exc.strerror}") from None

    def read_many(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        ids = list(ids)
        if len(ids) > 1:
            self._prefetch(ids)
        return {packet_id: self.read(packet_id) for packet_id in ids}

    def _prefetch(self, ids: Sequence[bytes]) -> None:
        """Ask the kernel to read every file ahead (``posix_fadvise(WILLNEED)``), so that the disk
        reads them side by side while they are read one by one (their pages left the cache once
        written, module doc). Advice only: a missing file is for :meth:`read` to report."""
        advise = getattr(os, "posix_fadvise", None)
        if advise is None:
            return
        for packet_id in ids:
            try:
                fd = os.open(self.path(packet_id), os.O_RDONLY)
            except OSError:
                continue
            try:
                advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)

    def remove(self, paths: Iterable[Path]) -> None:
        """Remove files a rolled-back transaction wrote (or orphans); gone already is fine."""
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def files(self) -> Iterator[tuple[str, Path]]:
        """Every file under the directory, as (name, path); nothing if there is no directory."""
        try:
            subdirs = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for sub in subdirs:
            if not sub.is_dir(follow_symlinks=False):
                yield sub.name, Path(sub.path)
                continue
            for entry in sorted(os.scandir(sub.path), key=lambda e: e.name):
                yield entry.name, Path(entry.path)

    def candidates(self) -> list[tuple[bytes | None, Path]]:
        """Every file that may be an orphan: (its packet id, or None for a temporary or foreign
        file, and its path). A file named by a row is one of these until the rows say so."""
        out: list[tuple[bytes | None, Path]] = []
        for name, path in self.files():
            placed = _is_id(name) and path.parent.name == name[:2] and path.parent.parent == self.root
            out.append((bytes.fromhex(name) if placed else None, path))
        return out

    def copy_to(self, other: BodyFiles, ids: Iterable[bytes]) -> int:
        """Copy the bodies of ``ids`` into ``other`` (a backup's directory), durably."""
        dirs: set[Path] = set()
        count = 0
        for packet_id in ids:
            source, target = self.path(packet_id), other.path(packet_id)
            if target.parent not in dirs and not target.parent.is_dir():
                other._make_dir(target.parent)
            dirs.add(target.parent)
            try:
                shutil.copyfile(source, target)
            except FileNotFoundError:
                raise LedgerCorrupt(
                    f"packet {packet_id.hex()}", f"its body file {source} is missing"
                ) from None
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            count += 1
        for directory in dirs:
            _fsync_dir(directory)
        return count

    def _make_dir(self, directory: Path) -> None:
        """Create ``directory`` (and the root) durably: a file's name needs its directory's."""
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(self.root.parent)
        directory.mkdir(mode=0o700, exist_ok=True)
        _fsync_dir(self.root)


def _drop_cached(fd: int) -> None:
    """``posix_fadvise(DONTNEED)`` over the whole file: starts the writeback of its dirty pages,
    drops its clean ones. Advice only: where it is missing or refused, nothing changes."""
    advise = getattr(os, "posix_fadvise", None)  # not on macOS
    if advise is not None:
        with contextlib.suppress(OSError):
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        import errno

        # Some file systems cannot fsync a directory (they order its entries themselves);
        # SQLite goes on there too.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _write_error(exc: OSError, root: Path) -> LedgerError:
    import errno

    if exc.errno == errno.ENOSPC:
        return LedgerError("the disk is full; nothing was written")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return LedgerError(f"cannot write body files in {root} ({exc.strerror}); nothing was written")
    return LedgerError(f"cannot write a body file in {root}: {exc.strerror}; nothing was written")
