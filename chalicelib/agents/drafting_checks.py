"""Checks of a draft against its brief: the outline (presence and order) and the length."""

from __future__ import annotations

import difflib
import math
import re
from bisect import bisect_left
from typing import Any

from chalicelib.agents.textstats import words

#: "1. Intro", "II) Intro", "Section 3: Intro" all mean "Intro".
NUMBERING = re.compile(r"^\s*(?:section\s+)?(?:\d+(?:\.\d+)*|[ivxlc]+)[.):\s-]+\s*", re.IGNORECASE)
#: how alike two headings must be to count as the same section ("What we changed" ~ "What We Have Changed").
SIMILAR = 0.85
#: characters of a heading compared for similarity (exact matches compare the whole heading).
MAX_COMPARED = 80


def normalize(heading: str) -> str:
    text = NUMBERING.sub("", heading.strip().casefold())
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def check_outline(outline: list[str], headings: list[str]) -> dict[str, Any]:
    """Match draft headings to outline items; report missing, extra and out-of-order sections.

    Positions are 1-based. Out of order are the matched sections outside a
    longest run that follows the outline's order: the fewest moves that fix it.
    """
    wanted = [normalize(h) for h in outline]
    taken: set[int] = set()
    matches: list[tuple[int, int]] = []  # (draft position, outline position), 0-based
    extra = []
    for pos, heading in enumerate(headings):
        target = _match(normalize(heading), wanted, taken)
        if target is None:
            extra.append({"heading": heading, "position": pos + 1})
        else:
            taken.add(target)
            matches.append((pos, target))
    in_order = _longest_increasing([t for _, t in matches])
    out_of_order = [{"heading": headings[pos], "position": pos + 1, "expected_position": target + 1}
                    for k, (pos, target) in enumerate(matches) if k not in in_order]
    missing = [{"heading": outline[i], "position": i + 1} for i in range(len(outline)) if i not in taken]
    return {"expected": len(outline), "found": len(headings), "matched": len(matches), "missing": missing,
            "extra": extra, "out_of_order": out_of_order}


def _match(heading: str, wanted: list[str], taken: set[int]) -> int | None:
    for i, item in enumerate(wanted):
        if i not in taken and item == heading:
            return i
    best, best_ratio = None, SIMILAR
    # SequenceMatcher is quadratic in the lengths: compare bounded prefixes, and only after the linear
    # upper bound (quick_ratio) says the pair could reach the threshold. 30 long outline items against 50
    # long model headings took 17 s.
    heading = heading[:MAX_COMPARED]
    for i, item in enumerate(wanted):
        if i in taken:
            continue
        matcher = difflib.SequenceMatcher(None, item[:MAX_COMPARED], heading)
        if matcher.real_quick_ratio() < best_ratio or matcher.quick_ratio() < best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio >= best_ratio:
            best, best_ratio = i, ratio
    return best


def _longest_increasing(values: list[int]) -> set[int]:
    """Indices (into `values`) of one longest strictly increasing subsequence (patience sorting)."""
    tails: list[int] = []  # values
    tail_index: list[int] = []  # index of each tail
    parent = [-1] * len(values)
    for i, v in enumerate(values):
        k = bisect_left(tails, v)
        if k == len(tails):
            tails.append(v)
            tail_index.append(i)
        else:
            tails[k] = v
            tail_index[k] = i
        parent[i] = tail_index[k - 1] if k else -1
    chosen: set[int] = set()
    i = tail_index[-1] if tail_index else -1
    while i != -1:
        chosen.add(i)
        i = parent[i]
    return chosen


def check_length(bodies: list[str], target: int, tolerance: float) -> dict[str, Any]:
    count = sum(len(words(body)) for body in bodies)
    # Rounded first: 400 * 1.2 is 480.00000000000006 in floating point, and must not become 481.
    low, high = math.floor(round(target * (1 - tolerance), 6)), math.ceil(round(target * (1 + tolerance), 6))
    return {"words": count, "target": target, "tolerance": tolerance, "min_words": low, "max_words": high,
            "within_tolerance": low <= count <= high, "deviation_pct": round((count - target) / target * 100, 1)}
