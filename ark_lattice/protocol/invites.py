"""Invites: how a newcomer joins a federation without being handed its key in the clear (sans-I/O).

An invite (``federation invite``) carries an invite id, a random 32-byte secret, the inviter's node
ID and endpoints, and an expiry — never the federation key. The newcomer (``federation join``)
dials the inviter's ``/join`` path and runs the usual Noise ``XXpsk0`` handshake with the PSK
derived from the secret instead of the federation key, expecting the inviter's static key. Only
then, over the session that handshake keyed, does the inviter hand over the federation key (so it
is encrypted to the joiner's static key and the inviter's ephemeral one). docs/protocol.md
("Joining") has the wire format and the threat model; in short:

- a sniffed or leaked invite is worth nothing after its expiry, nor once used (the inviter counts
  uses, :class:`InviteBook`), and whoever uses it is recorded in the inviter's ledger at the tier
  the invite named;
- an invite is bound to the inviter's key: a node that copies it cannot pose as the inviter,
  because the joiner's handshake expects the inviter's static key;
- an eavesdropper on the join session learns neither the federation key nor the secret.

Every decision (well-formed? known? expired? used up?) is taken here with ``now`` as an input; the
runtime (runtime/joining.py) only moves the bytes.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ark_lattice.encoding import canonical, decode
from ark_lattice.errors import (
    ErrorCode,
    LocalProtocolError,
    Malformed,
    RemoteProtocolError,
    UsageError,
)
from ark_lattice.federation_url import check_peer_url
from ark_lattice.identity import Identity, NodeId
from ark_lattice.protocol import handshake
from ark_lattice.protocol.channel import SecureChannel
from ark_lattice.tiers import TrustTier
from ark_lattice.timestamps import rfc3339

__all__ = [
    "Invite",
    "IssuedInvite",
    "InviteBook",
    "Joiner",
    "Host",
    "Welcome",
    "JOIN_PATH",
    "INVITE_PREFIX",
    "invite_psk",
]

INVITE_PREFIX = "ARK-INVITE:"  # upper case: a QR code holds it in alphanumeric mode
INVITE_VERSION = 1
JOIN_PATH = "/join"
ID_SIZE = 8
SECRET_SIZE = 32
MAX_INVITE_BYTES = 1024
MAX_JOIN_MESSAGE = 4096
MAX_ENDPOINTS = 8
CLOCK_MARGIN = 300.0  # seconds: the joiner's clock may run ahead of the inviter's
_PSK_PERSON = b"ark-invite-psk"  # BLAKE2b personalisation: this hash is for nothing else


def invite_psk(secret: bytes) -> bytes:
    """The Noise PSK of a join handshake: a hash of the invite secret, never the secret itself."""
    return hashlib.blake2b(secret, digest_size=handshake.PSKLEN, person=_PSK_PERSON).digest()


def _utc(ts: float) -> str:
    return rfc3339(ts) or ""


@dataclass(frozen=True)
class Invite:
    """What the newcomer holds: enough to reach the inviter and prove it was invited."""

    invite_id: bytes
    secret: bytes = field(repr=False)
    inviter: NodeId
    endpoints: tuple[str, ...]
    expires_at: int  # Unix seconds

    def to_text(self) -> str:
        raw = canonical(
            [INVITE_VERSION, self.invite_id, self.secret, self.inviter.key, list(self.endpoints),
             self.expires_at]
        )
        return INVITE_PREFIX + base64.b32encode(raw).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> Invite:
        """An invite from its text (case, spaces and line breaks ignored), or one clear sentence."""
        compact = "".join(text.split()).upper()
        if not compact.startswith(INVITE_PREFIX):
            raise UsageError(f"that is not an invite: it does not start with {INVITE_PREFIX}")
        body = compact[len(INVITE_PREFIX):]
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError:
            raise UsageError("that invite is damaged: it is not valid base32") from None
        try:
            doc = decode(raw, max_size=MAX_INVITE_BYTES, what="the invite")
            version, invite_id, secret, inviter, endpoints, expires_at = doc
            if version != INVITE_VERSION:
                raise UsageError(f"that invite is of version {version}; this node reads version 1")
            if not (isinstance(invite_id, bytes) and len(invite_id) == ID_SIZE):
                raise Malformed("bad invite id")
            if not (isinstance(secret, bytes) and len(secret) == SECRET_SIZE):
                raise Malformed("bad secret")
            if not isinstance(inviter, bytes) or not isinstance(expires_at, int):
                raise Malformed("bad inviter or expiry")
            if not isinstance(endpoints, list) or not 0 < len(endpoints) <= MAX_ENDPOINTS:
                raise Malformed("bad endpoints")
            urls = tuple(check_peer_url(str(u)) for u in endpoints)
            return cls(invite_id, secret, NodeId(inviter), urls, expires_at)
        except (Malformed, ValueError, TypeError):
            raise UsageError("that invite is damaged: copy it again in full") from None

    @property
    def hex_id(self) -> str:
        return self.invite_id.hex()

    def check_fresh(self, now: float) -> None:
        """The joiner's own check, before it dials anyone. The inviter's clock decides; ours may
        be off by a few minutes, so only an invite past that margin is refused here."""
        if now >= self.expires_at + CLOCK_MARGIN:
            # The same sentence (and exit status) as the inviter's refusal of an expired invite.
            raise UsageError(f"the invite expired at {_utc(self.expires_at)}; ask for a new one")


@dataclass
class IssuedInvite:
    """What the inviter keeps of an invite it made (in invites.json, private to the node)."""

    invite_id: str  # hex
    psk: bytes = field(repr=False)
    created_at: int
    expires_at: int
    uses: int  # how many joins it allows in all
    tier: TrustTier  # the tier a joiner gets
    joined: list[str] = field(default_factory=list)  # node ids that used it, in order

    @property
    def uses_left(self) -> int:
        return max(0, self.uses - len(self.joined))

    def state(self, now: float) -> str:
        if self.uses_left == 0:
            return "used"
        if now >= self.expires_at:
            return "expired"
        return "open"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.invite_id, "psk": self.psk.hex(), "created_at": self.created_at,
            "expires_at": self.expires_at, "uses": self.uses, "tier": self.tier.value,
            "joined": list(self.joined),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> IssuedInvite:
        return cls(
            str(doc["id"]), bytes.fromhex(str(doc["psk"])), int(doc["created_at"]),
            int(doc["expires_at"]), int(doc["uses"]), TrustTier(str(doc["tier"])),
            [str(j) for j in doc.get("joined", [])],
        )

    def public_json(self, now: float) -> dict[str, Any]:
        """What `federation invites` shows: everything but the key material."""
        return {
            "id": self.invite_id, "created_at": _utc(self.created_at), "expires_at": _utc(self.expires_at),
            "uses": self.uses, "uses_left": self.uses_left, "tier": self.tier.value,
            "joined": list(self.joined), "state": self.state(now),
        }


@dataclass(frozen=True)
class Refusal:
    """Why an invite is not honoured, in one sentence the joiner prints."""

    code: str
    reason: str


class InviteBook:
    """The inviter's open invites and the decisions about them; persistence is the caller's."""

    MAX_KEPT = 256  # used and expired invites are dropped past this many

    def __init__(self, issued: Sequence[IssuedInvite] = ()) -> None:
        self._issued = {i.invite_id: i for i in issued}

    def __iter__(self) -> Any:
        return iter(sorted(self._issued.values(), key=lambda i: i.created_at))

    def to_json(self) -> list[dict[str, Any]]:
        return [i.to_json() for i in self]

    @classmethod
    def from_json(cls, docs: Sequence[dict[str, Any]]) -> InviteBook:
        return cls([IssuedInvite.from_json(d) for d in docs])

    def issue(
        self,
        inviter: NodeId,
        endpoints: Sequence[str],
        *,
        now: float,
        expires_in: float,
        uses: int,
        tier: TrustTier,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> Invite:
        if expires_in <= 0:
            raise UsageError("an invite must expire in the future (--expires)")
        if uses < 1:
            raise UsageError("an invite allows at least one use (--uses)")
        if tier is TrustTier.BLOCKED:
            raise UsageError("an invite cannot give the blocked tier")
        urls = tuple(dict.fromkeys(check_peer_url(u) for u in endpoints))
        if not urls:
            raise UsageError("the invite needs an address where this node listens (--endpoint)")
        if len(urls) > MAX_ENDPOINTS:
            urls = urls[:MAX_ENDPOINTS]
        invite = Invite(
            random_bytes(ID_SIZE), random_bytes(SECRET_SIZE), inviter, urls, int(now + expires_in)
        )
        self._issued[invite.hex_id] = IssuedInvite(
            invite.hex_id, invite_psk(invite.secret), int(now), invite.expires_at, uses, tier
        )
        self._prune(now)
        return invite

    def revoke(self, invite_id: str) -> IssuedInvite:
        found = self._find(invite_id)
        del self._issued[found.invite_id]
        return found

    def check(self, invite_id: bytes, now: float) -> IssuedInvite | Refusal:
        """May a join with this invite go ahead now? (Asked before the handshake.)"""
        issued = self._issued.get(invite_id.hex())
        if issued is None:
            reason = "the inviter knows no such invite (revoked or never made)"
            return Refusal(ErrorCode.INVITE_REFUSED, reason)
        if issued.uses_left == 0:
            return Refusal(ErrorCode.INVITE_REFUSED, "the invite was already used; ask for a new one")
        if now >= issued.expires_at:
            reason = f"the invite expired at {_utc(issued.expires_at)}; ask for a new one"
            return Refusal(ErrorCode.INVITE_REFUSED, reason)
        return issued

    def consume(self, invite_id: bytes, joiner: str, now: float) -> IssuedInvite | Refusal:
        """The joiner proved the secret: count the use (checked again: another join may have won)."""
        verdict = self.check(invite_id, now)
        if isinstance(verdict, IssuedInvite):
            verdict.joined.append(joiner)
        return verdict

    def _find(self, prefix: str) -> IssuedInvite:
        hits = [i for key, i in self._issued.items() if key.startswith(prefix.strip().lower())]
        if not prefix.strip() or not hits:
            raise UsageError(f"no invite {prefix!r}")
        if len(hits) > 1:
            raise UsageError(f"{prefix!r} matches several invites; give more characters")
        return hits[0]

    def _prune(self, now: float) -> None:
        spent = [i for i in self if i.state(now) != "open"]
        while len(self._issued) > self.MAX_KEPT and spent:
            del self._issued[spent.pop(0).invite_id]


# -- the join exchange --------------------------------------------------------------------------
#
#   joiner -> host   ["join", 1, invite_id, msg1]       msg1 made with the invite's PSK
#   host -> joiner   ["msg2", msg2] | ["refused", code, sentence]
#   joiner -> host   ["msg3", msg3]
#   host -> joiner   ["welcome", sealed] | ["refused", code, sentence]
#                    sealed = the first channel frame: canonical({"key", "name", "tier"})


@dataclass(frozen=True)
class Welcome:
    """What the joiner gets: the federation key, the inviter's name and the tier it was given."""

    inviter: NodeId
    federation_key: bytes = field(repr=False)
    name: str
    tier: str


def _message(data: bytes, what: str) -> list[Any]:
    doc = decode(data, max_size=MAX_JOIN_MESSAGE, what=what)
    if not isinstance(doc, list) or not doc or not isinstance(doc[0], str):
        raise Malformed(f"{what} is not a join message")
    return doc


def _refusal(doc: list[Any]) -> RemoteProtocolError:
    code = str(doc[1]) if len(doc) > 1 else ErrorCode.INVITE_REFUSED
    reason = str(doc[2])[:300] if len(doc) > 2 else "the inviter refused the invite"
    return RemoteProtocolError(code, reason)


class Joiner:
    """The newcomer's side: ``start()``, then ``receive()`` each reply until ``welcome`` is set.

    A refusal from the inviter raises :class:`RemoteProtocolError` with the inviter's sentence.
    """

    def __init__(
        self, identity: Identity, invite: Invite, *, random_bytes: Callable[[int], bytes] | None = None
    ) -> None:
        self._invite = invite
        self._hs = handshake.Initiator(
            identity, invite_psk(invite.secret), random_bytes=random_bytes, expected_peer=invite.inviter
        )
        self._channel: SecureChannel | None = None
        self.welcome: Welcome | None = None

    def start(self) -> bytes:
        return canonical(["join", INVITE_VERSION, self._invite.invite_id, self._hs.start()])

    def receive(self, data: bytes) -> bytes | None:
        doc = _message(data, "the inviter's answer")
        if doc[0] == "refused":
            raise _refusal(doc)
        if doc[0] == "msg2" and self._channel is None and len(doc) == 2 and isinstance(doc[1], bytes):
            msg3 = self._hs.receive(doc[1])  # fails unless the inviter holds the invite and its key
            self._channel = SecureChannel.from_handshake(self._hs.result)
            return canonical(["msg3", msg3])
        if doc[0] == "welcome" and self._channel is not None and len(doc) == 2:
            plain = decode(self._channel.open(bytes(doc[1])), max_size=MAX_JOIN_MESSAGE, what="welcome")
            try:
                key, name, tier = plain["key"], str(plain["name"]), str(plain["tier"])
            except (KeyError, TypeError):
                raise Malformed("the welcome misses a field") from None
            if not isinstance(key, bytes) or len(key) != handshake.FEDERATION_KEY_SIZE:
                raise Malformed("the welcome carries no 32-byte federation key")
            self.welcome = Welcome(self._invite.inviter, key, name[:64], tier)
            return None
        raise Malformed(f"unexpected {doc[0]!r} message from the inviter")


class Host:
    """The inviter's side of one join connection.

    ``receive`` answers each message of the joiner; when the exchange ends, ``done`` is set and
    ``joined`` (the joiner's id and the invite it used) or ``refused`` says how. The invite's use
    is counted in the book the moment the joiner has proven the secret, before the key goes out.
    """

    def __init__(
        self,
        identity: Identity,
        book: InviteBook,
        federation_key: bytes,
        name: str,
        *,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self._identity = identity
        self._book = book
        self._key = federation_key
        self._name = name
        self._random_bytes = random_bytes
        self._hs: handshake.Responder | None = None
        self._invite_id = b""
        self.done = False
        self.joined: tuple[str, IssuedInvite] | None = None
        self.refused: Refusal | None = None

    def receive(self, data: bytes, now: float) -> bytes:
        if self.done:
            raise LocalProtocolError("the join exchange is over")
        try:
            return self._receive(data, now)
        except (Malformed, RemoteProtocolError) as exc:
            code = exc.code if isinstance(exc, RemoteProtocolError) else ErrorCode.MALFORMED
            if code in (ErrorCode.HANDSHAKE_FAILED, ErrorCode.FOREIGN_FEDERATION):
                # psk0: a msg1 that does not authenticate was made without the invite's secret.
                return self._refuse(Refusal(ErrorCode.INVITE_REFUSED, "the invite's secret does not match"))
            return self._refuse(Refusal(str(code), str(exc)))

    def _receive(self, data: bytes, now: float) -> bytes:
        doc = _message(data, "the join request")
        if self._hs is None:
            if doc[0] != "join" or len(doc) != 4 or doc[1] != INVITE_VERSION or not isinstance(doc[2], bytes):
                raise Malformed("not a join request of version 1")
            self._invite_id = doc[2]
            verdict = self._book.check(self._invite_id, now)
            if isinstance(verdict, Refusal):
                return self._refuse(verdict)
            self._hs = handshake.Responder(self._identity, verdict.psk, random_bytes=self._random_bytes)
            msg2 = self._hs.receive(bytes(doc[3]) if isinstance(doc[3], bytes) else b"")
            return canonical(["msg2", msg2])
        if doc[0] != "msg3" or len(doc) != 2 or not isinstance(doc[1], bytes):
            raise Malformed("expected msg3")
        self._hs.receive(doc[1])
        joiner = str(self._hs.result.peer)
        if joiner == str(self._identity.node_id):
            return self._refuse(Refusal(ErrorCode.INVITE_REFUSED, "a node cannot use its own invite"))
        verdict = self._book.consume(self._invite_id, joiner, now)  # again: it may have expired
        if isinstance(verdict, Refusal):
            return self._refuse(verdict)
        channel = SecureChannel.from_handshake(self._hs.result)
        sealed = channel.seal(canonical({"key": self._key, "name": self._name, "tier": verdict.tier.value}))
        self.done, self.joined = True, (joiner, verdict)
        return canonical(["welcome", sealed])

    def _refuse(self, refusal: Refusal) -> bytes:
        self.done, self.refused = True, refusal
        return canonical(["refused", refusal.code, refusal.reason])
