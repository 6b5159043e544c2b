"""The conversion timeline against brute force: where each output frame falls, which bisection node
shows it, which model calls that needs (against simulating every frame's bisection), and what it
costs next to bisecting each frame on its own."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from cdfi.inference.video.timing import MAX_DEPTH, Node, Timeline, count_calls, node_levels, place
from cdfi.io.video import VideoError, parse_rate

RATES = [
    (Fraction(24), Fraction(60)),
    (Fraction(25), Fraction(60)),
    (Fraction(30), Fraction(25)),
    (Fraction(24000, 1001), Fraction(60000, 1001)),
    (Fraction(25), Fraction(60000, 1001)),
    (Fraction(50), Fraction(24)),
    (Fraction(24), Fraction(240)),
]


def brute_place(t: Fraction, tol: Fraction) -> Fraction:
    """The time shown for ``t``: of all dyadic j / 2^d, the shallowest depth with one within ``tol``,
    the nearest one there (searched exhaustively)."""
    for d in range(MAX_DEPTH + 1):
        grid = [Fraction(j, 2**d) for j in range(2**d + 1)]
        best = min(grid, key=lambda g: (abs(g - t), g.denominator))
        if abs(best - t) <= tol:
            return best
    raise AssertionError("no node within the tolerance")


def bisection_chain(t: Fraction) -> list[Fraction]:
    """The midpoints computed when bisecting towards the dyadic time ``t`` on its own, from (0, 1)."""
    lo, hi, chain = Fraction(0), Fraction(1), []
    while lo != t and hi != t:
        mid = (lo + hi) / 2
        chain.append(mid)
        lo, hi = (mid, hi) if mid < t else (lo, mid)
    return chain


def test_place_matches_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(400):
        t = Fraction(rng.randrange(0, 1001), 1000)
        tol = rng.choice([Fraction(1, 16), Fraction(1, 8), Fraction(1, 64), Fraction(3, 100), Fraction(0)])
        if tol == 0:
            t = Fraction(rng.randrange(0, 33), 32)
        node = place(t, tol)
        assert node.time == brute_place(t, tol), (t, tol, node)
        assert node.depth == 0 or node.index % 2 == 1  # lowest terms
        assert abs(node.time - t) <= tol


def test_t_zero_is_the_input_and_exact_dyadics_are_reached() -> None:
    assert place(Fraction(0), Fraction(1, 16)) == Node(0, 0)
    for k in range(1, 32):
        assert place(Fraction(k, 32), Fraction(0)).time == Fraction(k, 32)


def test_nodes_needed_are_the_union_of_the_bisection_chains() -> None:
    rng = random.Random(1)
    for _ in range(100):
        targets = [
            place(Fraction(rng.randrange(1, 1000), 1000), Fraction(1, 2 ** rng.randrange(2, 7))) for _ in range(4)
        ]
        levels = node_levels(targets)
        computed = [n for level in levels for n in level]
        want = {m for n in targets if n.depth for m in bisection_chain(n.time)}
        assert {n.time for n in computed} == want
        assert len(computed) == len(want)  # each node once
        for depth, level in enumerate(levels, start=1):  # every parent is an input or a shallower node
            assert all(n.depth == depth for n in level)
            for n in level:
                for p in n.parents():
                    assert p.depth < depth and (p.depth == 0 or p in levels[p.depth - 1])


@pytest.mark.parametrize(("in_rate", "out_rate"), RATES)
def test_timeline_places_every_output_frame(in_rate: Fraction, out_rate: Fraction) -> None:
    """Output k of n inputs falls at k / out_rate: between inputs floor(u) and floor(u) + 1 at t = u - floor(u),
    u = k * in_rate / out_rate; every k from 0 to the last input's time appears once."""
    tol, n = Fraction(1, 16), 13
    timeline = Timeline(in_rate, out_rate, tol)
    placements = [p for i in range(n - 1) for p in timeline.pair(i)]
    final = timeline.final(n)
    frames = [p.frame for p in placements] + ([final.frame] if final else [])
    last = math.floor((n - 1) * out_rate / in_rate)
    assert frames == list(range(last + 1)) == list(range(timeline.count(n)))
    for p in placements:
        u = p.frame * in_rate / out_rate
        assert (p.pair, p.t) == (math.floor(u), u - math.floor(u))
        assert p.node.time == brute_place(p.t, tol) and p.error <= tol
    if final is not None:
        assert final.frame * in_rate / out_rate == n - 1


@pytest.mark.parametrize(("in_rate", "out_rate"), RATES)
def test_call_counts_against_independent_bisection(in_rate: Fraction, out_rate: Fraction) -> None:
    """Shared calls = the distinct midpoints of all frames' own bisection chains, per pair; naive = the
    chains' lengths added up."""
    timeline = Timeline(in_rate, out_rate, Fraction(1, 16))
    placements = [p for i in range(12) for p in timeline.pair(i)]
    calls = count_calls(placements)
    chains = {(p.pair, m) for p in placements for m in bisection_chain(p.node.time)}
    assert calls.shared == len(chains)
    assert calls.naive == sum(len(bisection_chain(p.node.time)) for p in placements)
    assert calls.shared <= calls.naive and calls.shared <= calls.full_tree


def test_power_of_two_rates_are_exact_midpoints() -> None:
    """out_rate = in_rate x 2^k with tolerance 0 (the --factor timeline): t = j / 2^k, all exact."""
    for k in range(1, 6):
        timeline = Timeline(Fraction(25), Fraction(25 * 2**k), Fraction(0))
        placements = timeline.pair(0)
        assert [p.t for p in placements] == [Fraction(j, 2**k) for j in range(2**k)]
        assert all(p.error == 0 for p in placements)
        assert count_calls(placements).shared == 2**k - 1


def test_rates_parse_like_people_write_them() -> None:
    assert parse_rate("60", "--target_fps") == 60
    assert parse_rate("60000/1001", "--target_fps") == Fraction(60000, 1001)
    for text, base in (("59.94", 60), ("29.97", 30), ("23.976", 24), ("23.98", 24), ("119.88", 120)):
        assert parse_rate(text, "--target_fps") == Fraction(base * 1000, 1001)
    assert parse_rate("12.5", "--fps") == Fraction(25, 2)
    assert parse_rate("24.5", "--fps") == Fraction(49, 2)
    for bad in ("0", "-25", "abc", "1/0", ""):
        with pytest.raises(VideoError, match="--target_fps"):
            parse_rate(bad, "--target_fps")
