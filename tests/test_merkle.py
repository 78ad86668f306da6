"""RFC 6962 Merkle trees and proofs, checked against the published Certificate Transparency vectors.

The 8-leaf tree, its roots, node hashes, inclusion paths and consistency proofs come from
transparency-dev/merkle (testonly/constants.go and proof/verify_test.go, where inclusion vectors
number leaves from 1), which carry over the RFC 6962 reference data of
google/certificate-transparency (python/ct/crypto/merkle_test.py). That file also gives the
node-hash vector and the inclusion proof of a real CT log entry (leaf 848049 of a tree of 3630887
leaves) used below.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ark_lattice.errors import Malformed, VerificationError
from ark_lattice.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


# -- published vectors ----------------------------------------------------------------------------

LEAF_DATA = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]

# ROOTS[n] is the root of the tree of the first n leaves (testonly.RootHashes()).
ROOTS = [
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

# NODE_HASHES[level][index] for every complete subtree of the 8-leaf tree (testonly.NodeHashes()).
NODE_HASHES = [
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [
        h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
    ],
]

# Compact range of each prefix, as (level, index) into NODE_HASHES (testonly.CompactTrees()).
COMPACT_RANGES = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]

# (leaf index from 0, tree size, audit path) — proof/verify_test.go inclusionProofs, minus one.
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        3,
        [
            h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        ],
    ),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# (old size, new size, proof) — proof/verify_test.go consistencyProofs.
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

# google/certificate-transparency python/ct/crypto/merkle_test.py: an entry of a real CT log.
CT_LEAF_HASH = h("7a395c866d5ecdb0cccb623e011dbc392cd348d1d1d72776174e127a24b09c78")
CT_LEAF_INDEX = 848049
CT_TREE_SIZE = 3630887
CT_ROOT = h("78316a05c9bcf14a3a4548f5b854a9adfcd46a4c034401b3ce7eb7ac2f1d0ecb")
CT_AUDIT_PATH = [
    h("1a208aeebcd1b39fe2de247ee8db9454e1e93a312d206b87f6ca9cc6ec6f1ddd"),
    h("0a1b78b383f580856f433c01a5741e160d451c185910027f6cc9f828687a40c4"),
    h("3d1745789bc63f2da15850de1c12a5bf46ed81e1cc90f086148b1662e79aab3d"),
    h("9095b61e14d8990acf390905621e62b1714fb8e399fbb71de5510e0aef45affe"),
    h("0a332b91b8fab564e6afd1dd452449e04619b18accc0ff9aa8393cd4928451f2"),
    h("2336f0181d264aed6d8f3a6507ca14a8d3b3c3a23791ac263e845d208c1ee330"),
    h("b4ce56e300590500360c146c6452edbede25d4ed83919278749ee5dbe178e048"),
    h("933f6ddc848ea562e4f9c5cfb5f176941301dad0c6fdb9d1fbbe34fac1be6966"),
    h("b95a6222958a86f74c030be27c44f57dbe313e5e7c7f4ffb98bcbd3a03bb52f2"),
    h("daeeb3ce5923defd0faeb8e0c210b753b85b809445d7d3d3cd537a9aabaa9c45"),
    h("7fadd0a13e9138a2aa6c3fdec4e2275af233b94812784f66bcca9aa8e989f2bc"),
    h("1864e6ba3e32878610546539734fb5eeae2529991f130c575c73a7e25a2a7c56"),
    h("12842d1202b1dc6828a17ab253c02e7ce9409b5192430feba44189f39cc02d66"),
    h("29af64b16fa3053c13d02ac63aa75b23aa468506e44c3a2315edc85d2dc22b11"),
    h("b527b99934a0bd9edd154e449b0502e2c499bba783f3bc3dfe23364b6b532009"),
    h("4584db8ae8e351ace08e01f306378a92bfd43611714814f3d834a2842d69faa8"),
    h("86a9a41573b0d6e4292f01e93243d6cc65b30f06606fc6fa57390e7e90ed580f"),
    h("a88b98fbe84d4c6aae8db9d1605dfac059d9f03fe0fcb0d5dff1295dacba09e6"),
    h("06326dc617a6d1f7021dc536026dbfd5fffc6f7c5531d48ef6ccd1ed1569f2a1"),
    h("f41fe8fdc3a2e4e8345e30216e7ebecffee26ff266eeced208a6c2a3cf08f960"),
    h("40cf5bde8abb76983f3e98ba97aa36240402975674e120f234b3448911090f8d"),
    h("b3222dc8658538079883d980d7fdc2bef9285344ea34338968f736b04aeb387a"),
]

LEAVES = [leaf_hash(d) for d in LEAF_DATA]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


# -- a reference implementation, straight from the RFC text ---------------------------------------


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH by the recursive definition of RFC 6962 §2.1."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


# -- hashing --------------------------------------------------------------------------------------


def test_empty_tree_hash_is_sha256_of_nothing():
    assert EMPTY_ROOT == ROOTS[0]
    assert root([]) == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT


def test_ct_leaf_and_node_hash_vectors():
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(h("101112131415161718191a1b1c1d1e1f")) == h(
        "3bfb960453ebaebf33727da7a1f4db38acc051d381b6da20d6d4e88f0eabfd7a"
    )
    assert node_hash(
        h("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        h("202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"),
    ) == h("1a378704c17da31e2d05b6d121c2bb2c7d76f6ee6fa8f983e596c2d034963c57")


def test_leaf_and_node_hashes_match_vectors():
    assert LEAVES == NODE_HASHES[0]
    for level in range(1, len(NODE_HASHES)):
        below = NODE_HASHES[level - 1]
        assert [node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)] == (
            NODE_HASHES[level]
        )


@pytest.mark.parametrize("size", range(9))
def test_roots_match_vectors(size):
    assert root(LEAVES[:size]) == ROOTS[size]
    assert reference_root(LEAVES[:size]) == ROOTS[size]


def test_compact_range_matches_vectors_at_every_size():
    tree = CompactRange()
    for size in range(9):
        assert tree.size == size
        assert list(tree.hashes) == [NODE_HASHES[lv][i] for lv, i in COMPACT_RANGES[size]]
        assert tree.root() == ROOTS[size]
        if size < 8:
            tree.append(LEAVES[size])


def test_compact_range_resumes_from_stored_state():
    first = CompactRange()
    first.extend(LEAVES[:5])
    resumed = CompactRange(first.size, first.hashes)
    resumed.extend(LEAVES[5:])
    assert resumed.root() == ROOTS[8]
    assert first.root() == ROOTS[5]  # the original is untouched


def test_compact_range_rejects_inconsistent_state():
    with pytest.raises(Malformed):
        CompactRange(5, [ROOTS[4]])  # 5 = 0b101 needs two subtree roots
    with pytest.raises(Malformed):
        CompactRange(1, [b"short"])
    with pytest.raises(Malformed):
        CompactRange().append(b"not a hash")


def test_compact_range_memory_stays_logarithmic():
    tree = CompactRange()
    data_hash = leaf_hash(b"x")
    for _ in range(5000):
        tree.append(data_hash)
        assert len(tree.hashes) == tree.size.bit_count() <= tree.size.bit_length()


# -- inclusion ------------------------------------------------------------------------------------


@pytest.mark.parametrize("index,size,path", INCLUSION_VECTORS)
def test_inclusion_vectors_are_generated(index, size, path):
    assert inclusion_proof(LEAVES[:size], index) == path


@pytest.mark.parametrize("index,size,path", INCLUSION_VECTORS)
def test_inclusion_vectors_verify_and_corruptions_fail(index, size, path):
    leaf, good_root = LEAVES[index], ROOTS[size]
    verify_inclusion(leaf, index, size, path, good_root)
    assert root_from_inclusion_proof(leaf, index, size, path) == good_root

    # The corruption probes of transparency-dev/merkle proof/verify_test.go.
    probes = [
        (leaf, index - 1, size, path, good_root),
        (leaf, index + 1, size, path, good_root),
        (leaf, index ^ 2, size, path, good_root),
        (leaf, index, size * 2, path, good_root),
        (leaf, index, size // 2, path, good_root),
        (leaf_hash(b"WrongLeaf"), index, size, path, good_root),
        (leaf, index, size, path, EMPTY_ROOT),
        (leaf, index, size, path, SOME_HASH),
        (leaf, index, size, [*path, good_root], good_root),
        (leaf, index, size, [good_root, *path], good_root),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((leaf, index, size, flipped, good_root))
    if path:
        probes.append((leaf, index, size, path[:-1], good_root))
    if len(path) > 1:
        probes.append((leaf, index, size, [path[0], SOME_HASH, *path[1:]], good_root))
    for probe in probes:
        with pytest.raises(VerificationError):
            verify_inclusion(*probe)


def test_inclusion_of_a_real_ct_log_entry():
    verify_inclusion(CT_LEAF_HASH, CT_LEAF_INDEX, CT_TREE_SIZE, CT_AUDIT_PATH, CT_ROOT)
    with pytest.raises(VerificationError):
        verify_inclusion(CT_LEAF_HASH, CT_LEAF_INDEX, CT_TREE_SIZE, CT_AUDIT_PATH, bytes(32))
    with pytest.raises(VerificationError):  # an index past what the path can reach
        verify_inclusion(
            CT_LEAF_HASH, CT_LEAF_INDEX + 2 ** (len(CT_AUDIT_PATH) + 1), CT_TREE_SIZE,
            CT_AUDIT_PATH, CT_ROOT,
        )


def test_inclusion_edge_cases():
    single = leaf_hash(b"data")
    verify_inclusion(single, 0, 1, [], single)  # a one-leaf tree's root is its leaf
    for index, size in [(0, 0), (1, 0), (1, 1), (2, 1)]:
        with pytest.raises(VerificationError):
            verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)
    with pytest.raises(Malformed):
        verify_inclusion(b"", 0, 1, [], single)
    with pytest.raises(Malformed):
        verify_inclusion(single, 0, 1, [], b"")
    with pytest.raises(Malformed):
        verify_inclusion(single, 0, 2, [b"\x00" * 31], single)
    with pytest.raises(Malformed):
        verify_inclusion(single, -1, 2, [single], single)
    with pytest.raises(Malformed):
        verify_inclusion(single, 0, 2, [single] * 100, single)
    with pytest.raises(ValueError):
        inclusion_proof(LEAVES, 8)
    with pytest.raises(ValueError):
        inclusion_proof([], 0)


# -- consistency ----------------------------------------------------------------------------------


@pytest.mark.parametrize("old_size,new_size,proof", CONSISTENCY_VECTORS)
def test_consistency_vectors_are_generated(old_size, new_size, proof):
    assert consistency_proof(LEAVES[:new_size], old_size) == proof


@pytest.mark.parametrize("old_size,new_size,proof", CONSISTENCY_VECTORS)
def test_consistency_vectors_verify_and_corruptions_fail(old_size, new_size, proof):
    old_root, new_root = ROOTS[old_size], ROOTS[new_size]
    verify_consistency(old_size, new_size, old_root, new_root, proof)
    if not proof:
        return
    wrong_root = hashlib.sha256(b"WrongRoot").digest()
    probes = [
        (old_size - 1, new_size, old_root, new_root, proof),
        (old_size + 1, new_size, old_root, new_root, proof),
        (old_size ^ 2, new_size, old_root, new_root, proof),
        (old_size, new_size * 2, old_root, new_root, proof),
        (old_size, new_size // 2, old_root, new_root, proof),
        (old_size, new_size, wrong_root, new_root, proof),
        (old_size, new_size, old_root, wrong_root, proof),
        (old_size, new_size, new_root, old_root, proof),
        (old_size, new_size, old_root, new_root, []),
        (old_size, new_size, old_root, new_root, [*proof, old_root]),
        (old_size, new_size, old_root, new_root, [*proof, new_root]),
        (old_size, new_size, old_root, new_root, [old_root, *proof]),
        (old_size, new_size, old_root, new_root, [new_root, *proof]),
        (old_size, new_size, old_root, new_root, [proof[0], *proof]),
        (old_size, new_size, old_root, new_root, proof[:-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((old_size, new_size, old_root, new_root, flipped))
    for probe in probes:
        with pytest.raises(VerificationError):
            verify_consistency(*probe)


def test_consistency_edge_cases():
    a, b = ROOTS[1], ROOTS[2]
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, a, [])
    verify_consistency(1, 1, a, a, [])
    failures = [
        (0, 0, EMPTY_ROOT, a, []),  # two roots for the empty tree
        (1, 1, a, b, []),  # two roots for one size: a fork
        (0, 1, a, b, []),  # an empty tree must have the empty root
        (1, 0, a, EMPTY_ROOT, []),  # time travel
        (2, 1, b, a, []),
        (1, 2, a, b, []),  # empty proof for a real extension
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # trivial cases take no proof
        (0, 1, EMPTY_ROOT, a, [EMPTY_ROOT]),
        (1, 1, a, a, [a]),
    ]
    for probe in failures:
        with pytest.raises(VerificationError):
            verify_consistency(*probe)
    with pytest.raises(Malformed):
        verify_consistency(1, 2, b"short", b, [a])
    with pytest.raises(ValueError):
        consistency_proof(LEAVES, 9)
    assert consistency_proof(LEAVES, 0) == []
    assert consistency_proof(LEAVES, 8) == []


# -- properties -----------------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=40, unique=True).map(
    lambda data: [leaf_hash(d) for d in data]
)


@settings(max_examples=60, deadline=None)
@given(leaf_lists)
def test_incremental_root_equals_recursive_root(leaves):
    tree = CompactRange()
    for n, leaf in enumerate(leaves, start=1):
        tree.append(leaf)
        assert tree.root() == reference_root(leaves[:n])
    assert root(iter(leaves)) == reference_root(leaves)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_every_inclusion_proof_verifies_and_tampering_fails(leaves, data):
    size, good_root = len(leaves), reference_root(leaves)
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        verify_inclusion(leaves[index], index, size, proof, good_root)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(leaves, index)
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[index], other, size, proof, good_root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[other], index, size, proof, good_root)
        at = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        tampered = list(proof)
        tampered[at] = _flip(tampered[at], bit)
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[index], index, size, tampered, good_root)


@settings(max_examples=60, deadline=None)
@given(leaf_lists, st.data())
def test_every_consistency_proof_verifies_and_tampering_fails(leaves, data):
    size, new_root = len(leaves), reference_root(leaves)
    for old_size in range(size + 1):
        proof = consistency_proof(leaves, old_size)
        verify_consistency(old_size, size, reference_root(leaves[:old_size]), new_root, proof)
    old_size = data.draw(st.integers(1, size), label="old_size")
    old_root = reference_root(leaves[:old_size])
    proof = consistency_proof(leaves, old_size)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        tampered = list(proof)
        tampered[at] = _flip(tampered[at], bit)
        with pytest.raises(VerificationError):
            verify_consistency(old_size, size, old_root, new_root, tampered)
        with pytest.raises(VerificationError):
            verify_consistency(old_size, size, _flip(old_root, bit), new_root, proof)
        with pytest.raises(VerificationError):
            verify_consistency(old_size, size, old_root, _flip(new_root, bit), proof)
    # A tree that rewrote an old leaf is caught, whatever proof its log offers.
    forked = list(leaves)
    forked[old_size - 1] = leaf_hash(b"rewritten" + forked[old_size - 1])
    if old_size < size:
        with pytest.raises(VerificationError):
            forked_proof = consistency_proof(forked, old_size)
            verify_consistency(old_size, size, old_root, reference_root(forked), forked_proof)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.lists(st.binary(min_size=32, max_size=32), max_size=8),
)
def test_verifiers_on_arbitrary_input_only_raise_verification_errors(a, b, proof):
    for call in (
        lambda: verify_inclusion(SOME_HASH, a, b, proof, ROOTS[3]),
        lambda: verify_consistency(a, b, ROOTS[3], ROOTS[5], proof),
    ):
        try:
            call()
        except VerificationError:
            pass


def _flip(value: bytes, bit: int) -> bytes:
    i = bit // 8 % len(value)
    return value[:i] + bytes([value[i] ^ (1 << (bit % 8))]) + value[i + 1 :]
