"""Files only the node's owner may read (keys): created 0600, never overwritten, synced to disk."""

from __future__ import annotations

import os

__all__ = ["write_private"]


def write_private(path: os.PathLike[str] | str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
