"""What each node *should* hold, given who is connected to whom and the trust tiers (DESIGN §5).

Packets flow over a connection from ``u`` to ``w`` when ``u`` sends to ``w`` (``w`` is core to
``u``) and ``w`` accepts from ``u`` (``u`` is core or sandbox to ``w``). If ``u`` is core to ``w``
the packet *carries*: ``w`` stores it as shareable and passes it on. If ``u`` is sandbox to ``w``
the edge is *terminal*: ``w`` keeps it in quarantine and never re-shares it.

So a node should eventually hold every packet that some node holding it shareably can reach over
carry edges, plus one terminal edge at the end. This module computes that for all nodes at once:
strongly connected components of the carry graph (Tarjan), then one pass over the condensation in
topological order, with node and packet sets as Python integers used as bitsets. Nothing here
depends on set iteration order, so the result is the same under any ``PYTHONHASHSEED``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ark_lattice.merkle import leaf_hash, root
from ark_lattice.tiers import TrustTier

__all__ = ["FlowGraph", "flows", "merkle_root"]

_DIALABLE = (TrustTier.CORE, TrustTier.SANDBOX, TrustTier.EXTERNAL)


def flows(tier_u_gives_w: TrustTier, tier_w_gives_u: TrustTier) -> str | None:
    """How packets move from ``u`` to ``w``: ``"carry"``, ``"terminal"`` or None (not at all)."""
    if tier_u_gives_w is not TrustTier.CORE:
        return None  # u sends only to core peers
    if tier_w_gives_u is TrustTier.CORE:
        return "carry"
    if tier_w_gives_u is TrustTier.SANDBOX:
        return "terminal"
    return None


def dials(tier: TrustTier) -> bool:
    """Whether a node dials a peer of this tier (runtime/peering.py ``_refresh_targets``)."""
    return tier in _DIALABLE


class FlowGraph:
    """The carry and terminal edges among ``n`` nodes, some of which may have left for good."""

    def __init__(self, n: int, carry: Sequence[Sequence[int]], terminal: Sequence[Sequence[int]]) -> None:
        self.n = n
        self._carry = [sorted(set(s)) for s in carry]
        self._terminal_in: list[list[int]] = [[] for _ in range(n)]
        for u, targets in enumerate(terminal):
            for w in sorted(set(targets)):
                self._terminal_in[w].append(u)
        self._gone = 0  # bitset of nodes that left (dropped): they neither hold nor relay
        self._build()

    def remove(self, node: int) -> None:
        self._gone |= 1 << node
        self._build()

    def expected(self, holdings: Sequence[int]) -> list[int]:
        """For each node, the packets (a bitset) it should hold, given what each node holds
        shareably now (``holdings[u]``; ignored for removed nodes)."""
        comp_of, order, succ = self._comp_of, self._topo, self._comp_succ
        inflow = [0] * len(order)
        for u in range(self.n):
            if not self._gone >> u & 1:
                inflow[comp_of[u]] |= holdings[u]
        for c in order:  # sources first: everything upstream has been added to inflow[c]
            if inflow[c]:
                for d in succ[c]:
                    inflow[d] |= inflow[c]
        out = []
        for w in range(self.n):
            if self._gone >> w & 1:
                out.append(0)
                continue
            bits = inflow[comp_of[w]]
            for u in self._terminal_in[w]:
                if not self._gone >> u & 1:
                    bits |= inflow[comp_of[u]]
            out.append(bits)
        return out

    # -- Tarjan's strongly connected components, iteratively ---------------------------------

    def _build(self) -> None:
        n, gone = self.n, self._gone
        index = [-1] * n
        low = [0] * n
        on_stack = [False] * n
        stack: list[int] = []
        comp_of = [-1] * n
        comps: list[list[int]] = []  # emitted sinks first (reverse topological order)
        counter = 0
        for start in range(n):
            if index[start] != -1 or gone >> start & 1:
                continue
            work = [(start, 0)]
            while work:
                v, i = work.pop()
                if i == 0:
                    index[v] = low[v] = counter
                    counter += 1
                    stack.append(v)
                    on_stack[v] = True
                recurse = False
                edges = self._carry[v]
                while i < len(edges):
                    w = edges[i]
                    i += 1
                    if gone >> w & 1:
                        continue
                    if index[w] == -1:
                        work.append((v, i))
                        work.append((w, 0))
                        recurse = True
                        break
                    if on_stack[w]:
                        low[v] = min(low[v], index[w])
                if recurse:
                    continue
                if low[v] == index[v]:
                    members = []
                    while True:
                        w = stack.pop()
                        on_stack[w] = False
                        comp_of[w] = len(comps)
                        members.append(w)
                        if w == v:
                            break
                    comps.append(members)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
        succ: list[list[int]] = [[] for _ in comps]
        for u in range(n):
            if gone >> u & 1:
                continue
            for w in self._carry[u]:
                if not gone >> w & 1 and comp_of[u] != comp_of[w]:
                    succ[comp_of[u]].append(comp_of[w])
        self._comp_of = [c if c >= 0 else 0 for c in comp_of]
        self._comp_succ = [sorted(set(s)) for s in succ]
        self._topo = list(range(len(comps) - 1, -1, -1))  # Tarjan emits sinks first


def merkle_root(ids: Sequence[bytes]) -> bytes:
    """RFC 6962 root over the leaf hashes of the packet ids in byte order (DESIGN §8)."""
    return root(leaf_hash(i) for i in sorted(ids))
