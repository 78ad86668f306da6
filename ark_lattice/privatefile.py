"""Files only the node's owner may read (keys): created 0600, never overwritten, synced to disk.

Some file systems cannot keep a file private: FAT and exFAT (what most USB sticks carry) and many
network or FUSE mounts show every file as 0777 whatever ``chmod`` asked. The mode is read back after
writing; a secret in the clear on such a file system is removed again and refused, with one line
saying why. A sealed key may stay: it is encrypted, the mode was only a second fence.
"""

from __future__ import annotations

import os
import stat

from ark_lattice.errors import ConfigError

__all__ = ["write_private", "PermissionsNotKept"]


class PermissionsNotKept(ConfigError):
    """The file system does not keep mode 0600, so a secret in the clear would be readable by all."""


def write_private(path: os.PathLike[str] | str, data: bytes, *, secret: bool = True) -> None:
    """Write ``data`` to a new file with mode 0600. ``secret`` (a key in the clear) is refused,
    and the file removed, where the file system does not keep that mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, 0o600)  # O_CREAT's mode goes through the umask; say it once more
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
    finally:
        os.close(fd)
    if secret and mode & 0o077:
        os.unlink(path)
        raise PermissionsNotKept(
            f"the file system of {os.fspath(path)!r} cannot keep a key private (mode {mode:o}, not 600; "
            "FAT/exFAT and some network mounts ignore permissions): put the home on a Linux file "
            "system such as ext4"
        )
