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
    │   └── PolicyError                 a policy that does not load; names its ``file`` and ``line``
    ├── IdentityError                   the node identity cannot be loaded
    │   ├── NotInitialised              no identity in this home yet (exit 5)
    │   └── BadPassphrase               the sealed key did not open
    ├── VerificationError               a signed object failed a check
    │   ├── Malformed                   not decodable, wrong shape, or over a size limit
    │   ├── BadSignature
    │   ├── Expired
    │   └── Rollback                    an older sequence number than the one already held
    ├── LedgerError                     the store refused or failed an operation
    │   ├── LedgerCorrupt               ``ledger verify`` found a bad entry (names it)
    │   ├── LedgerMissing               the home has a node but its ledger is gone or empty (exit 5)
    │   └── NotEnoughSpace              too little free disk for ``ledger compact``; nothing written
    ├── Unfinished                      a check stopped before an answer (its worker was killed)
    ├── NodeNotRunning                  a live-node command with no node running (exit 3)
    ├── HomeUnusable                    --home is a file, cannot be created or is read-only (exit 4)
    └── ProtocolError                   a session could not go on
        ├── LocalProtocolError          our node misused a session or the protocol core (a bug)
        └── RemoteProtocolError         the peer misbehaved; carries a wire ``ErrorCode``

:class:`ErrorCode` is the vocabulary of those wire codes: the code of an error frame, of a
``RemoteProtocolError``, of a session's close reason and of an audit event about a peer. It lives
here, beside the exceptions that carry it, so no module spells a code as a raw string.

:class:`ExitCode` is the one table of process exit codes (docs/operator.md, "Exit codes"): every
exception class names its code from it, and the CLI uses it for the few exits that are not errors.
"""

from __future__ import annotations

import enum

__all__ = [
    "ErrorCode",
    "ExitCode",
    "ArkLatticeError",
    "UsageError",
    "NotFound",
    "AmbiguousId",
    "AlreadyExists",
    "ConfigError",
    "PolicyError",
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
    "HomeUnusable",
    "LedgerMissing",
    "NotEnoughSpace",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
]


class ErrorCode(enum.StrEnum):
    """Codes of error frames, close reasons and audit events about a peer (docs/protocol.md §13).

    A ``StrEnum``: each member is its wire text, so ``ErrorCode.BLOCKED == "blocked"``.
    """

    MALFORMED = "malformed"  # undecodable frame or field out of bounds
    UNKNOWN_FRAME = "unknown_frame"
    UNSUPPORTED_VERSION = "unsupported_version"
    TOO_LARGE = "too_large"
    HANDSHAKE_FAILED = "handshake_failed"
    DECRYPT_FAILED = "decrypt_failed"  # tampered, replayed or reordered ciphertext
    BAD_SIGNATURE = "bad_signature"
    BAD_MANIFEST = "bad_manifest"  # expired, rolled back, or not the peer's own
    BAD_PACKET = "bad_packet"  # a packet that fails verification
    FUTURE_TIMESTAMP = "future_timestamp"
    FORBIDDEN = "forbidden"  # the tier does not allow this
    POLICY_DENIED = "policy_denied"
    RATE_LIMITED = "rate_limited"
    UNSOLICITED = "unsolicited"  # an answer or packets nobody asked for
    OUT_OF_ORDER = "out_of_order"  # a frame not allowed in the session's state
    DUPLICATE_SESSION = "duplicate_session"
    BLOCKED = "blocked"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    QUARANTINED = "quarantined"  # an alert accused the peer; held until proven or expired
    FOREIGN_FEDERATION = "foreign_federation"  # the peer holds another federation key
    # A close reason only, never sent in a frame: the transport ended without the peer telling us
    # why (or with a reason that is not one of these codes).
    CONNECTION_LOST = "connection_lost"
    # On the /join path only (protocol/invites.py): the inviter does not honour the invite.
    INVITE_REFUSED = "invite_refused"
    # A peer's input passed one of its budgets (decoding limits, reconciliation ranges or cost;
    # policy [limits]): refused unprocessed, with a strike.
    OVER_BUDGET = "over_budget"


class ExitCode(enum.IntEnum):
    """How a command ends, for scripts: the same condition gives the same code in every command."""

    OK = 0
    FAILED = 1  # the command ran and the answer is no: a check failed, a key did not open, …
    USAGE = 2  # bad arguments or input from the operator
    NODE_NOT_RUNNING = 3  # the command needs the running node and none answers
    HOME_UNUSABLE = 4  # --home is a file, cannot be created, or is read-only for a command that writes
    NO_NODE = 5  # no node in this home (not initialised), or its ledger is missing or empty
    INTERNAL = 70  # a bug (EX_SOFTWARE); ARK_LATTICE_DEBUG=1 shows the traceback
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    BROKEN_PIPE = 141  # the reader of our output went away (128 + SIGPIPE), as `| head` does


class ArkLatticeError(Exception):
    """Root of every error ark-lattice raises on purpose."""

    exit_code: int = ExitCode.FAILED


class UsageError(ArkLatticeError):
    exit_code = ExitCode.USAGE


class NotFound(UsageError):
    pass


class AmbiguousId(UsageError):
    pass


class AlreadyExists(UsageError):
    pass


class ConfigError(ArkLatticeError):
    pass


class PolicyError(ConfigError):
    """A policy that does not load. ``file`` is where it came from (a path, or a name such as
    ``default.toml``); ``line`` is the line of the first problem, for ``policy check`` to point at,
    or ``None`` when the file could not be read at all."""

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class IdentityError(ArkLatticeError):
    pass


class NotInitialised(IdentityError):
    exit_code = ExitCode.NO_NODE


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

    def __reduce__(self) -> tuple[type[LedgerCorrupt], tuple[str, str]]:
        # Made again from both parts when it crosses from a verifying process (signatures.py).
        return type(self), (self.entry, self.reason)


class Unfinished(ArkLatticeError):
    """A check stopped before it had an answer, for a reason outside what it checks (a worker
    process it needed was killed): nothing is known, so nothing is said to be wrong."""


class NodeNotRunning(ArkLatticeError):
    exit_code = ExitCode.NODE_NOT_RUNNING


class HomeUnusable(ArkLatticeError):
    """The home directory cannot be used: a file, not creatable, or read-only for a writing command."""

    exit_code = ExitCode.HOME_UNUSABLE


class LedgerMissing(LedgerError):
    """The home holds a node but not its ledger (gone, or zero bytes): only ``init`` creates one."""

    exit_code = ExitCode.NO_NODE


class NotEnoughSpace(LedgerError):
    """The disk has too little free space for the work asked (``ledger compact``), checked before
    anything is written, or it filled up and the work was rolled back. Exit 1, as a write that
    finds the disk full anywhere else: the answer is no, and the ledger is as it was."""


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
