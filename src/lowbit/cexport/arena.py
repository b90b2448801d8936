"""The static activation arena of an exported model: a liveness plan (pure Python).

Every buffer (an activation value of the lowered graph) lives from the step that writes it to
the last step that reads it, both inclusive, so a step's output never shares memory with its
inputs.  Buffers whose lifetimes overlap get disjoint byte ranges; the others may reuse the
same bytes.  Placement is the usual greedy one: largest buffer first, each at the lowest
aligned offset that clears every already placed buffer it is live with.  The arena is the
highest end offset; ``check`` verifies a plan independently.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Buffer", "plan", "check", "peak_live"]


@dataclass(frozen=True)
class Buffer:
    name: str
    size: int      # bytes
    first: int     # index of the step that writes it
    last: int      # index of the last step that reads it (>= first)

    def live_with(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def plan(buffers: list[Buffer], align: int = 8) -> tuple[dict[str, int], int]:
    """``({name: byte offset}, arena bytes)``: offsets multiples of ``align``."""
    for b in buffers:
        if b.size < 0 or b.last < b.first:
            raise ValueError(f"arena: buffer {b.name!r}: size {b.size}, lifetime "
                             f"[{b.first}, {b.last}]")
    order = sorted(buffers, key=lambda b: (-_align(b.size, align), b.first, b.name))
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[str, int] = {}
    for b in order:
        busy = sorted((off, off + _align(o.size, align)) for off, o in placed if o.live_with(b))
        at = 0
        for lo, hi in busy:                  # the first gap below the next busy range
            if at + b.size <= lo:
                break
            at = max(at, hi)
        offsets[b.name] = at
        placed.append((at, b))
    total = max((offsets[b.name] + _align(b.size, align) for b in buffers), default=0)
    return offsets, total


def check(buffers: list[Buffer], offsets: dict[str, int], total: int) -> None:
    """Raise if two buffers that are live at the same step overlap in memory, or one leaves
    the arena."""
    for i, a in enumerate(buffers):
        oa = offsets[a.name]
        if oa < 0 or oa + a.size > total:
            raise AssertionError(f"arena: {a.name!r} [{oa}, {oa + a.size}) outside [0, {total})")
        for b in buffers[i + 1:]:
            ob = offsets[b.name]
            if a.live_with(b) and oa < ob + b.size and ob < oa + a.size and a.size and b.size:
                raise AssertionError(f"arena: {a.name!r} and {b.name!r} are live together and "
                                     f"overlap")


def peak_live(buffers: list[Buffer]) -> int:
    """The most bytes live at any one step: a lower bound of any arena."""
    steps = {s for b in buffers for s in (b.first, b.last)}
    return max((sum(b.size for b in buffers if b.first <= s <= b.last) for s in steps),
               default=0)
