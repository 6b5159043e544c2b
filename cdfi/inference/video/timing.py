"""Where each output frame of a frame-rate conversion comes from, and which model calls that takes.

Input frame i is shown at i / in_rate and output frame k at k / out_rate, both counted from the first
input frame. Output k therefore falls between inputs i = floor(u) and i + 1 at t = u - i, where
u = k * in_rate / out_rate. The model only predicts midpoints, so t is reached by bisection: the frame
at time j / 2^d of a pair (a *node*, j odd, d >= 1) is the midpoint of the nodes at (j - 1) / 2^d and
(j + 1) / 2^d, which reduce to shallower depths; depth 0 holds the two inputs themselves.

Each output frame takes the shallowest node within ``tolerance`` (in input frame intervals) of its
time, so it never costs more calls than that tolerance needs; the nodes of one pair are computed once
and shared by every output frame that needs them. A slow-motion factor F (a power of two) is the same
timeline with ``out_rate = F * in_rate`` and tolerance 0: every t = k / F is a node, reached exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

MAX_DEPTH = 12
"""Deepest bisection level (2^12 = 4096 steps per input interval); tolerances below 2^-13 add nothing."""


@dataclass(frozen=True, order=True)
class Node:
    """The frame at time ``index / 2**depth`` of a pair, in lowest terms (``index`` odd for depth >= 1;
    depth 0 is input frame ``i`` for index 0 and ``i + 1`` for index 1)."""

    depth: int
    index: int

    @property
    def time(self) -> Fraction:
        return Fraction(self.index, 2**self.depth)

    def parents(self) -> tuple[Node, Node]:
        """The two nodes whose midpoint this one is (only for depth >= 1)."""
        return reduced(self.depth, self.index - 1), reduced(self.depth, self.index + 1)


def reduced(depth: int, index: int) -> Node:
    """``index / 2**depth`` as a node in lowest terms."""
    while depth > 0 and index % 2 == 0:
        depth, index = depth - 1, index // 2
    return Node(depth, index)


def place(t: Fraction, tolerance: Fraction, max_depth: int = MAX_DEPTH) -> Node:
    """The shallowest node within ``tolerance`` of ``t`` (0 <= t <= 1), the nearest one at that depth;
    past ``max_depth`` the nearest node at ``max_depth``. ``t`` exactly 0 gives the first input."""
    if not 0 <= t <= 1:
        raise ValueError(f"time {t} is outside its pair (0 to 1)")
    for depth in range(max_depth + 1):
        index = round(t * 2**depth)
        if abs(Fraction(index, 2**depth) - t) <= tolerance:
            return reduced(depth, index)
    return reduced(max_depth, round(t * 2**max_depth))


def node_levels(targets: Iterable[Node]) -> list[list[Node]]:
    """Every node the ``targets`` need, by depth (``levels[0]`` is depth 1): the targets and, recursively,
    the parents they are midpoints of. Each level depends only on shallower ones."""
    needed: set[Node] = set()
    stack = [n for n in targets if n.depth > 0]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        stack.extend(p for p in node.parents() if p.depth > 0)
    deepest = max((n.depth for n in needed), default=0)
    return [sorted(n for n in needed if n.depth == d) for d in range(1, deepest + 1)]


@dataclass(frozen=True)
class Placement:
    """Output frame ``frame``: requested at time ``t`` between inputs ``pair`` and ``pair + 1``, shown
    as ``node`` of that pair."""

    frame: int
    pair: int
    t: Fraction
    node: Node

    @property
    def error(self) -> Fraction:
        """Timing error in input frame intervals."""
        return abs(self.node.time - self.t)


class Timeline:
    """Output frames of a conversion from ``in_rate`` to ``out_rate`` (frames per second), placed with
    ``tolerance`` (input frame intervals; 0: exact, for rates that are 2^k times the input's)."""

    def __init__(self, in_rate: Fraction, out_rate: Fraction, tolerance: Fraction, max_depth: int = MAX_DEPTH):
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"frame rates must be positive, got {in_rate} and {out_rate}")
        if not 0 <= tolerance < Fraction(1, 2):
            raise ValueError(f"time tolerance must be at least 0 and below 1/2 of a frame interval, got {tolerance}")
        self.in_rate, self.out_rate = Fraction(in_rate), Fraction(out_rate)
        self.tolerance, self.max_depth = Fraction(tolerance), max_depth
        self.step = self.in_rate / self.out_rate
        """Input frame intervals per output frame."""

    def first_frame(self, pair: int) -> int:
        """The first output frame at or after input ``pair``."""
        return math.ceil(pair / self.step)

    def pair(self, i: int) -> list[Placement]:
        """Output frames shown from input ``i`` up to (not including) input ``i + 1``."""
        out = []
        for k in range(self.first_frame(i), self.first_frame(i + 1)):
            t = k * self.step - i
            out.append(Placement(k, i, t, place(t, self.tolerance, self.max_depth)))
        return out

    def final(self, inputs: int) -> Placement | None:
        """The output frame that falls exactly on the last input, if one does."""
        u = (inputs - 1) / self.step
        return Placement(int(u), inputs - 1, Fraction(0), Node(0, 0)) if u.denominator == 1 else None

    def count(self, inputs: int) -> int:
        """Output frames for ``inputs`` input frames: from the first input to the last one."""
        return math.floor((inputs - 1) / self.step) + 1 if inputs > 0 else 0


@dataclass(frozen=True)
class CallCount:
    """Model calls of a set of placements: ``shared`` (the distinct nodes, what is computed),
    ``naive`` (each output frame bisected on its own: its depth) and ``full_tree`` (every pair
    bisected to the deepest depth used anywhere)."""

    shared: int
    naive: int
    full_tree: int


def count_calls(placements: Sequence[Placement]) -> CallCount:
    """The three call counts of ``placements`` (see ``CallCount``)."""
    by_pair: dict[int, list[Node]] = {}
    for p in placements:
        by_pair.setdefault(p.pair, []).append(p.node)
    shared = sum(len(level) for nodes in by_pair.values() for level in node_levels(nodes))
    deepest = max((p.node.depth for p in placements), default=0)
    pairs_used = sum(1 for nodes in by_pair.values() if any(n.depth > 0 for n in nodes))
    return CallCount(shared, sum(p.node.depth for p in placements), pairs_used * (2**deepest - 1))


__all__ = [
    "MAX_DEPTH",
    "CallCount",
    "Node",
    "Placement",
    "Timeline",
    "count_calls",
    "node_levels",
    "place",
    "reduced",
]
