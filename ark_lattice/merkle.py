"""RFC 6962 Merkle trees: tree hash, inclusion and consistency proofs, and a streaming root.

The tree hash is RFC 6962 §2.1 (restated in RFC 9162 §2.1.1) with SHA-256::

    MTH({})      = SHA-256()                              the empty tree
    MTH({d0})    = SHA-256(0x00 || d0)                    a leaf
    MTH(D[n])    = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
                   where k is the largest power of two smaller than n

Proofs are generated as RFC 6962 §2.1.1 (PATH) and §2.1.2 (PROOF/SUBPROOF) define them and
checked with the verification algorithms of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
(consistency), so they interoperate with Certificate Transparency and the C2SP tlog ecosystem.

Everything here works on *leaf hashes* (``leaf_hash(entry)``), never on entries, so callers choose
what a leaf is. The generators take any ``Sequence`` of leaf hashes (a list, or a lazy view over a
database) and hash each leaf range once: proving one leaf of an ``n``-leaf tree costs ``O(n)``
hashing and ``O(log n)`` memory beyond the sequence. :class:`CompactRange` computes the root of a
stream of leaves the same way, for a ledger that cannot hold all its entries in memory.

Verification failures raise :class:`~ark_lattice.errors.VerificationError`; a proof or hash that
does not even have the right shape (wrong length, too many elements) raises its subclass
:class:`~ark_lattice.errors.Malformed`. Asking a generator for something impossible (a leaf past the
end of the tree) is a bug in the caller and raises :class:`ValueError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256 as _sha256

from ark_lattice.encoding import sha256
from ark_lattice.errors import Malformed, VerificationError

__all__ = [
    "HASH_SIZE",
    "EMPTY_ROOT",
    "MAX_PROOF_LEN",
    "leaf_hash",
    "node_hash",
    "root",
    "inclusion_proof",
    "verify_inclusion",
    "root_from_inclusion_proof",
    "consistency_proof",
    "verify_consistency",
    "CompactRange",
]

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"")  # RFC 6962 §2.1: the hash of an empty list is the hash of an empty string
# A tree of fewer than 2**64 leaves is at most 64 levels deep: an audit path holds one hash per
# level, and a consistency proof (RFC 6962 §2.1.2) at most one more, for the node it starts from.
MAX_PROOF_LEN = 65

_LEAF_PREFIX = b"\x00"  # RFC 6962 §2.1 domain separation between leaves and interior nodes
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d), the hash of one leaf entry."""
    return _sha256(_LEAF_PREFIX + data).digest()  # one call: ledger verify makes one per event


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right), the hash of an interior node."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """The Merkle tree hash of the leaves whose hashes are given, in order.

    ``O(n)`` hashing and ``O(log n)`` memory, so ``leaf_hashes`` may be a generator over a database.
    """
    tree = CompactRange()
    tree.extend(leaf_hashes)
    return tree.root()


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of all ``leaf_hashes`` (RFC 6962 §2.1.1).

    Ordered from the leaf's sibling up to the child of the root, as RFC 9162 §2.1.3.1 sends it.
    """
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    # PATH(m, D[lo:hi]) descends towards the leaf; each step contributes the root of the other
    # half, and those are listed from the bottom up, so collect them top-down and reverse.
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(_range_root(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            path.append(_range_root(leaf_hashes, lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that leaf hash ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root_hash``.

    Raises :class:`VerificationError` if it is not, :class:`Malformed` if the inputs are ill-formed.
    """
    _check_hash(root_hash, "root hash")
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if computed != root_hash:
        raise VerificationError(
            f"inclusion proof for leaf {index} of {size} does not lead to the expected root"
        )


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root an inclusion proof implies (RFC 9162 §2.1.3.2 steps 1–5, without the compare).

    Raises :class:`VerificationError` if the proof cannot belong to a tree of ``size`` at all.
    """
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    _check_hash(leaf, "leaf hash")
    _check_proof(proof)
    if index >= size:
        raise VerificationError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                # The node is the last one on its level and has no right sibling: climb until it is
                # a right child again (or the left edge is reached).
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree is deep")
    return r


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the first ``old_size`` leaves prefix all of ``leaf_hashes`` (RFC 6962 §2.1.2).

    Empty when ``old_size`` is 0 or the whole tree, as there is nothing to prove.
    """
    size = len(leaf_hashes)
    if not 0 <= old_size <= size:
        raise ValueError(f"old size {old_size} is not within the tree of size {size}")
    if old_size in (0, size):
        return []
    # SUBPROOF(m, D[lo:hi], b), unrolled. Each split contributes one hash; the recursion bottoms out
    # where m == n, which contributes the subtree root unless it is the old tree's own root (b).
    proof: list[bytes] = []
    lo, hi, m, whole_old_tree = 0, size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(_range_root(leaf_hashes, lo + k, hi))
            hi = lo + k
        else:
            proof.append(_range_root(leaf_hashes, lo, lo + k))
            lo, m, whole_old_tree = lo + k, m - k, False
    if not whole_old_tree:
        proof.append(_range_root(leaf_hashes, lo, hi))
    proof.reverse()
    return proof


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    RFC 9162 §2.1.4.2, plus the trivial cases it leaves out: equal sizes need equal roots and an
    empty proof, and every tree extends the empty one (whose root must then be :data:`EMPTY_ROOT`).
    Raises :class:`VerificationError` on failure, :class:`Malformed` on ill-formed inputs.
    """
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    _check_hash(old_root, "old root hash")
    _check_hash(new_root, "new root hash")
    _check_proof(proof)
    if old_size > new_size:
        raise VerificationError(f"tree size went backwards from {old_size} to {new_size}")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise VerificationError("consistency proof must be empty for these tree sizes")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise VerificationError("the root of an empty tree must be the empty hash")
        if old_size == new_size and old_root != new_root:
            raise VerificationError(f"two different roots for the tree of size {new_size}")
        return
    if not proof:
        raise VerificationError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a complete subtree of the new one, so its root is the proof's first node.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is shorter than the tree is deep")
    if fr != old_root:
        raise VerificationError(f"consistency proof does not lead to the root of size {old_size}")
    if sr != new_root:
        raise VerificationError(f"consistency proof does not lead to the root of size {new_size}")


class CompactRange:
    """The roots of the perfect subtrees covering leaves ``[0, size)``: enough to extend a tree.

    A leaf count ``2**a + 2**b + …`` (``a > b > …``) is covered by one perfect subtree per set
    bit, left to right from the largest; appending a leaf merges equal-sized subtrees as a
    binary counter carries (transparency-dev calls this a compact range). So
    ``append`` costs amortised ``O(1)`` hashing and the state is at most 64 hashes, which the ledger
    can store beside a checkpoint and resume from with ``CompactRange(size, hashes)``.
    """

    __slots__ = ("_size", "_hashes")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        hashes = list(hashes)
        _check_size(size, "tree size")
        if len(hashes) != size.bit_count():
            raise Malformed(f"a compact range of size {size} holds {size.bit_count()} hashes")
        for h in hashes:
            _check_hash(h, "subtree hash")
        self._size = size
        self._hashes = hashes

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect subtree roots, largest (leftmost) first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        """Add the leaf with hash ``leaf`` at index ``size``."""
        _check_hash(leaf, "leaf hash")
        h, n = leaf, self._size
        while n & 1:
            h = node_hash(self._hashes.pop(), h)
            n >>= 1
        self._hashes.append(h)
        self._size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH of the leaves so far: the subtree roots folded right to left (RFC 6962 §2.1)."""
        if not self._hashes:
            return EMPTY_ROOT
        r = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}…)"


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1), where RFC 6962 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_root(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    tree = CompactRange()
    for i in range(lo, hi):
        tree.append(leaf_hashes[i])
    return tree.root()


def _check_size(n: object, what: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << 64:
        raise Malformed(f"{what} must be an integer in [0, 2**64)")


def _check_hash(h: object, what: str) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise Malformed(f"{what} must be {HASH_SIZE} bytes")


def _check_proof(proof: Sequence[bytes]) -> None:
    if len(proof) > MAX_PROOF_LEN:
        raise Malformed(f"a proof has at most {MAX_PROOF_LEN} hashes, not {len(proof)}")
    for p in proof:
        _check_hash(p, "proof hash")
