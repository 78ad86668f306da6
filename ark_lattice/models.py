"""Federated model rounds in the ledger: ``model_update`` and ``model`` packets, and reading them.

An update is a packet of kind ``model_update`` on topic ``models/<name>`` whose body is the arrays in
the canonical layout of :mod:`ark_lattice.aggregation.tensors` (never pickle) and whose meta names the
model, the round and the sample count. A result is a packet of kind ``model`` on the same topic whose
body is the canonical CBOR of ``[1, name, round, method, params, [input ids], output hash, arrays]``:
anyone holding the inputs recomputes it with :func:`verify_model` and compares the bytes.

Only updates from core peers (or from this node) that are not quarantined are counted; the others
are listed as excluded with their reason. This module imports numpy only through the aggregation
package, inside the functions that need it, so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ark_lattice.encoding import canonical, decode
from ark_lattice.errors import Malformed, UsageError
from ark_lattice.packet import MAX_BODY
from ark_lattice.store.store import LOCAL_SOURCE
from ark_lattice.tiers import TrustTier

if TYPE_CHECKING:
    import numpy as np

    from ark_lattice.aggregation.methods import Params, Result, Update
    from ark_lattice.node import LocalNode
    from ark_lattice.packet import Packet
    from ark_lattice.store.store import Store, StoredPacket

__all__ = [
    "UPDATE_KIND",
    "MODEL_KIND",
    "MODEL_FORMAT",
    "ModelDoc",
    "RoundInputs",
    "check_model_name",
    "model_topic",
    "publish_update",
    "publish_model",
    "model_body",
    "decode_model",
    "round_updates",
    "round_inputs",
    "published_models",
    "verify_model",
]

UPDATE_KIND = "model_update"
MODEL_KIND = "model"
MODEL_FORMAT = 1
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PACKET_COLUMNS = "id, header, signature, body, source, received_at, quarantined"


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"bad model name {name!r}: 1-64 characters of a-z 0-9 . _ -, starting with a letter or digit"
        )
    return name


def model_topic(name: str) -> str:
    return f"models/{check_model_name(name)}"


def _check_round(round_: int) -> int:
    if isinstance(round_, bool) or not isinstance(round_, int) or not 0 <= round_ < 1 << 62:
        raise UsageError(f"the round must be a whole number from 0, not {round_!r}")
    return round_


# --- writing ---------------------------------------------------------------------------------------


async def publish_update(
    node: LocalNode, name: str, round_: int, samples: int, arrays: Mapping[str, np.ndarray]
) -> Packet:
    """Sign and store one client's update for a round; refused before signing if over the limit."""
    topic = model_topic(name)
    _check_round(round_)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UsageError(f"the sample count must be a whole number from 1, not {samples!r}")
    body = _encode_for_packet(arrays, "update")
    meta = {"model": name, "round": round_, "samples": samples}
    return await node.publish(topic=topic, kind=UPDATE_KIND, body=body, meta=meta)


def _encode_for_packet(arrays: Mapping[str, np.ndarray], what: str) -> bytes:
    """The canonical bytes of ``arrays``, or one sentence: bad arrays, or too large for a packet."""
    from ark_lattice.aggregation.tensors import MAX_TENSOR_BYTES, array_problem, encode_arrays

    problem = array_problem(arrays)
    if problem is not None:
        raise UsageError(problem)
    try:
        body = encode_arrays(arrays)
    except Malformed:
        size = sum(int(a.nbytes) for a in arrays.values())
        raise UsageError(
            f"the {what} is too large for one packet ({size} bytes of arrays > {MAX_TENSOR_BYTES}); "
            "chunking is future work"
        ) from None
    if len(body) > MAX_TENSOR_BYTES:  # encode_arrays refuses this already; kept as the rule here
        raise UsageError(
            f"the {what} is too large for one packet ({len(body)} bytes > {MAX_TENSOR_BYTES}); "
            "chunking is future work"
        )
    return body


def model_body(name: str, round_: int, params: Params, result: Result) -> bytes:
    """The canonical body of a ``model`` packet for ``result``."""
    from ark_lattice.aggregation.tensors import output_hash

    arrays = _encode_for_packet(result.arrays, "model")
    return canonical(
        [
            MODEL_FORMAT,
            name,
            round_,
            params.method,
            params.to_json(),
            sorted(result.inputs),
            output_hash(result.arrays),
            arrays,
        ]
    )


async def publish_model(
    node: LocalNode, name: str, round_: int, params: Params, result: Result
) -> Packet:
    """Sign and store the result of a round's aggregation."""
    topic = model_topic(name)
    _check_round(round_)
    body = model_body(name, round_, params, result)
    if len(body) > MAX_BODY:
        raise UsageError(
            f"the model is too large for one packet ({len(body)} bytes > {MAX_BODY}); "
            "chunking is future work"
        )
    meta = {"model": name, "round": round_, "method": params.method}
    return await node.publish(topic=topic, kind=MODEL_KIND, body=body, meta=meta)


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelDoc:
    """The decoded body of a ``model`` packet."""

    stored: StoredPacket
    name: str
    round: int
    method: str
    params: Any
    inputs: tuple[bytes, ...]
    output_hash: Any
    arrays_bytes: bytes

    @property
    def hex_id(self) -> str:
        return self.stored.packet.hex_id

    def arrays(self) -> dict[str, np.ndarray]:
        from ark_lattice.aggregation.tensors import decode_arrays

        return dict(decode_arrays(self.arrays_bytes))

    def to_json(self, *, shapes: bool = True) -> dict[str, Any]:
        h = self.stored.packet.header
        doc: dict[str, Any] = {
            "id": self.hex_id,
            "model": self.name,
            "round": self.round,
            "method": self.method,
            "params": self.params,
            "inputs": [i.hex() for i in self.inputs],
            "output_hash": _hex(self.output_hash),
            "author": str(h.author),
            "created_at": h.created_at,
            "size": h.body_size,
            "source": self.stored.source,
            "quarantined": self.stored.quarantined,
        }
        if shapes:
            try:
                doc["arrays"] = describe_arrays(self.arrays())
            except (Malformed, UsageError) as exc:
                doc["arrays"] = None
                doc["error"] = str(exc)
        return doc


def describe_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {k: {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in sorted(arrays.items())}


def _hex(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def decode_model(stored: StoredPacket) -> ModelDoc:
    """The body of a ``model`` packet, or :class:`Malformed` with one sentence."""
    packet = stored.packet
    what = f"model packet {packet.hex_id[:16]}"
    if packet.header.kind != MODEL_KIND:
        raise UsageError(f"packet {packet.hex_id[:16]} is a {packet.header.kind}, not a model")
    raw = decode(packet.body, max_size=MAX_BODY, what=what)
    if not isinstance(raw, list) or len(raw) != 8 or raw[0] != MODEL_FORMAT:
        raise Malformed(f"{what} has the wrong shape or format version")
    _, name, round_, method, params, inputs, out_hash, arrays = raw
    if not isinstance(name, str) or not isinstance(round_, int) or not isinstance(method, str):
        raise Malformed(f"{what} names its model, round or method wrongly")
    if not isinstance(inputs, list) or not all(isinstance(i, bytes) and len(i) == 32 for i in inputs):
        raise Malformed(f"{what} does not list its inputs as packet ids")
    if not isinstance(arrays, bytes) or not isinstance(out_hash, (bytes, str)):
        raise Malformed(f"{what} does not carry its output as bytes with a hash")
    return ModelDoc(stored, name, round_, method, params, tuple(inputs), out_hash, arrays)


async def _packets(store: Store, kind: str, name: str | None) -> list[StoredPacket]:
    """Packets of ``kind`` (on ``models/<name>`` if given), oldest first."""
    from ark_lattice.packet import Packet
    from ark_lattice.store.store import StoredPacket

    if name is not None:
        rows = await store.list_packets(topic=model_topic(name))
        return [r for r in reversed(rows) if r.packet.header.kind == kind]
    out = []
    sql = (
        f"SELECT {_PACKET_COLUMNS} FROM packets WHERE kind = '{kind}' "  # a constant, never input
        "AND topic LIKE 'models/%' ORDER BY created_at, id"
    )
    async for pid, header, signature, body, source, received_at, quarantined in store.iter_rows(sql):
        packet = Packet.from_store(pid, header, signature, store.row_body(pid, body))
        out.append(StoredPacket(packet, source, received_at, bool(quarantined)))
    return out


def _meta_int(meta: Mapping[str, Any], key: str) -> int | None:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class RoundInputs:
    """What a round's aggregation counts: the updates, and what it left out and why."""

    updates: list[Update]
    excluded: list[tuple[bytes, str]]


async def round_inputs(store: Store, name: str, round_: int, *, me: str | None = None) -> RoundInputs:
    """The round's updates that count, and those left out with a reason.

    Counted: not quarantined, authored by a core peer of ours or by this node (``me``, or a packet
    we published ourselves), one per author (its latest; earlier ones are listed as superseded).
    Every update returned has ``core=True``, so a recomputation elsewhere counts them the same way.
    """
    from ark_lattice.aggregation.methods import Update
    from ark_lattice.aggregation.tensors import decode_arrays

    _check_round(round_)
    tiers = {p.id: p.tier for p in await store.list_peers()}
    excluded: list[tuple[bytes, str]] = []
    latest: dict[str, tuple[StoredPacket, int]] = {}
    for stored in await _packets(store, UPDATE_KIND, name):
        h = stored.packet.header
        if h.meta.get("model") != name or _meta_int(h.meta, "round") != round_:
            continue
        author = str(h.author)
        if stored.quarantined:
            excluded.append((stored.packet.id, "quarantined (from a sandbox peer); never counted"))
            continue
        ours = author == me or (stored.source == LOCAL_SOURCE and me is None)
        if not ours and tiers.get(author) != TrustTier.CORE:
            tier = tiers.get(author)
            excluded.append(
                (stored.packet.id, f"its author is not a core peer here ({tier or 'unknown'})")
            )
            continue
        samples = _meta_int(h.meta, "samples")
        if samples is None or samples < 1:
            excluded.append((stored.packet.id, "its sample count is missing or not positive"))
            continue
        if author in latest:
            excluded.append((latest[author][0].packet.id, "superseded by a later update of its author"))
        latest[author] = (stored, samples)
    updates = []
    for author, (stored, samples) in sorted(latest.items()):
        try:
            arrays = decode_arrays(stored.packet.body)
        except (Malformed, UsageError) as exc:
            excluded.append((stored.packet.id, f"its arrays do not decode: {exc}"))
            continue
        updates.append(Update(stored.packet.id, author, samples, arrays, core=True))
    return RoundInputs(updates, excluded)


async def round_updates(store: Store, name: str, round_: int, *, me: str | None = None) -> list[Update]:
    """The updates of a round that count (see :func:`round_inputs`)."""
    return (await round_inputs(store, name, round_, me=me)).updates


async def published_models(
    store: Store, name: str | None = None, round_: int | None = None
) -> list[ModelDoc]:
    """The ``model`` packets held (of ``name``, of round ``round_``), oldest first; a packet whose
    body does not decode is left out."""
    found = []
    for stored in await _packets(store, MODEL_KIND, name):
        meta = stored.packet.header.meta
        if name is not None and meta.get("model") != name:
            continue
        if round_ is not None and _meta_int(meta, "round") != round_:
            continue
        try:
            found.append(decode_model(stored))
        except (Malformed, UsageError):
            continue
    return found


async def verify_model(store: Store, packet: Packet) -> tuple[bool, str]:
    """Recompute a published model from its listed inputs; (True, why) only if the bytes match."""
    from ark_lattice.aggregation.methods import Params, Update, aggregate
    from ark_lattice.aggregation.tensors import decode_arrays, encode_arrays, output_hash
    from ark_lattice.store.store import StoredPacket

    try:
        doc = decode_model(StoredPacket(packet, LOCAL_SOURCE, 0, False))
    except (Malformed, UsageError) as exc:
        return False, str(exc)
    short = packet.hex_id[:16]
    if not doc.inputs:
        return False, f"model {short} lists no inputs"
    held = await store.held_ids(list(doc.inputs))
    missing = [i for i in doc.inputs if i not in held]
    if missing:
        names = ", ".join(i.hex()[:16] for i in missing[:5]) + (", …" if len(missing) > 5 else "")
        return False, (
            f"{len(missing)} of {len(doc.inputs)} inputs of model {short} are not held here: {names}"
        )
    updates = []
    for stored in await store.get_packets(list(doc.inputs)):
        h = stored.packet.header
        samples = _meta_int(h.meta, "samples")
        same_round = h.meta.get("model") == doc.name and _meta_int(h.meta, "round") == doc.round
        if h.kind != UPDATE_KIND or not same_round:
            return False, (
                f"input {stored.packet.hex_id[:16]} is not an update of {doc.name} round {doc.round}"
            )
        if samples is None or samples < 1:
            return False, f"input {stored.packet.hex_id[:16]} has no positive sample count"
        try:
            arrays = decode_arrays(stored.packet.body)
        except (Malformed, UsageError) as exc:
            return False, f"input {stored.packet.hex_id[:16]} does not decode: {exc}"
        updates.append(Update(stored.packet.id, str(h.author), samples, arrays, core=True))
    try:
        params = Params.from_json(doc.params)
        if params.method != doc.method:
            return False, f"model {short} names method {doc.method} but its parameters say {params.method}"
        result = aggregate(updates, params)
    except (Malformed, UsageError) as exc:
        return False, f"recomputing model {short} failed: {exc}"
    if sorted(result.inputs) != sorted(doc.inputs):
        return False, f"recomputing model {short} counted other inputs than it lists"
    if output_hash(result.arrays) != doc.output_hash:
        return False, f"model {short}: the recomputed output hash differs from the published one"
    if encode_arrays(result.arrays) != doc.arrays_bytes:
        return False, f"model {short}: the recomputed output bytes differ from the published ones"
    try:
        decode_arrays(doc.arrays_bytes)
    except (Malformed, UsageError) as exc:
        return False, f"model {short}: its output does not decode: {exc}"
    return True, (
        f"model {short} verified: {len(doc.inputs)} input(s) recomputed with {doc.method} "
        "give the same bytes"
    )
