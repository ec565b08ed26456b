"""Mutations for searching per-unit allocations by measurement (EvoPress, Sieberling et al., ICML 2025, on
fused units instead of layers): plans change only by trades that never grow the checkpoint (issue 15)."""

from __future__ import annotations

import random


def level_switch(alloc: dict, kinds: dict, choices: dict, size_of, rng: random.Random) -> dict | None:
    """One EvoPress mutation on units: two units a, b of one kind (same shapes, so the same byte table); a takes
    a random other option, b the richest option with bytes(a) + bytes(b) within what the two held, so the plan
    never grows. None when b has no such option. alloc {unit key: Option}; kinds {unit name: [unit keys]}, two or
    more each; choices {unit key: [Option]}; size_of(key, option) -> bytes."""
    a, b = rng.sample(kinds[rng.choice(sorted(kinds))], 2)
    room = size_of(a, alloc[a]) + size_of(b, alloc[b])
    new_a = rng.choice([o for o in choices[a] if o != alloc[a]])
    fits = [o for o in choices[b] if size_of(a, new_a) + size_of(b, o) <= room]
    if not fits:
        return None
    return {**alloc, a: new_a, b: max(fits, key=lambda o: (size_of(b, o), o.bits))}
