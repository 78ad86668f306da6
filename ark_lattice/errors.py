"""The one exception tree of ark-lattice.

Every error the library raises on purpose derives from :class:`ArkLatticeError`; the CLI turns any
of them into one line on stderr and the exit code of its class, in one place (``cli/app.py``).
Local misuse (the operator or our own code asked for something impossible) is kept apart from remote
misbehaviour (a peer sent something it must not), as h11 does::

    ArkLatticeError                     exit 1 unless a subclass says otherwise
    ├── UsageError                      bad arguments or input from the operator (exit 2)
    │   ├── NotFound                    no object with that id or prefix
    │   ├── AmbiguousId                 a prefix that matches several objects
    │   └── AlreadyExists               init on a home that already holds a node
    ├── ConfigError                     a config or policy file that cannot be used
    ├── IdentityError                   the node identity cannot be loaded
    │   ├── NotInitialised              no identity in this home yet
    │   └── BadPassphrase               the sealed key did not open
    ├── VerificationError               a signed object failed a check
    │   ├── Malformed                   not decodable, wrong shape, or over a size limit
    │   ├── BadSignature
    │   ├── Expired
    │   └── Rollback                    an older sequence number than the one already held
    ├── LedgerError                     the store refused or failed an operation
    │   └── LedgerCorrupt               ``ledger verify`` found a bad entry (names it)
    ├── NodeNotRunning                  a live-node command with no node running
    └── ProtocolError                   a session could not go on
        ├── LocalProtocolError          we tried something the protocol forbids (a bug)
        └── RemoteProtocolError         the peer misbehaved; carries a wire error code
"""

from __future__ import annotations

__all__ = [
    "ArkLatticeError",
    "UsageError",
    "NotFound",
    "AmbiguousId",
    "AlreadyExists",
    "ConfigError",
    "IdentityError",
    "NotInitialised",
    "BadPassphrase",
    "VerificationError",
    "Malformed",
    "BadSignature",
    "Expired",
    "Rollback",
    "LedgerError",
    "LedgerCorrupt",
    "NodeNotRunning",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
]


class ArkLatticeError(Exception):
    """Root of every error ark-lattice raises on purpose."""

    exit_code = 1


class UsageError(ArkLatticeError):
    exit_code = 2


class NotFound(UsageError):
    pass


class AmbiguousId(UsageError):
    pass


class AlreadyExists(UsageError):
    pass


class ConfigError(ArkLatticeError):
    pass


class IdentityError(ArkLatticeError):
    pass


class NotInitialised(IdentityError):
    pass


class BadPassphrase(IdentityError):
    pass


class VerificationError(ArkLatticeError):
    pass


class Malformed(VerificationError):
    pass


class BadSignature(VerificationError):
    pass


class Expired(VerificationError):
    pass


class Rollback(VerificationError):
    pass


class LedgerError(ArkLatticeError):
    pass


class LedgerCorrupt(LedgerError):
    """``ledger verify`` found a mismatch; ``entry`` names the first bad entry."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"ledger verification failed at {entry}: {reason}")
        self.entry = entry
        self.reason = reason


class NodeNotRunning(ArkLatticeError):
    pass


class ProtocolError(ArkLatticeError):
    pass


class LocalProtocolError(ProtocolError):
    pass


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; ``code`` is the wire error code sent back to it."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
