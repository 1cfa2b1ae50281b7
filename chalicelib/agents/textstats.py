"""Deterministic writing diagnostics, computed locally (no model involved).

Used by the `editing` agent (before and after an edit) and by `enhancement`
for documents. Heuristics, stated so the numbers can be checked by hand:

- words: runs of letters (with inner apostrophes); numbers are not words.
- sentences: text up to . ! or ? followed by whitespace (not after a known
  abbreviation such as "e.g." or "Dr."), or up to a blank line.
- syllables: vowel groups (a e i o u y) after dropping a silent final "e",
  "es" or "ed" ("make", "makes", "jumped" are one syllable; "table",
  "places", "wanted" two); words of up to three letters count one.
- Flesch reading ease = 206.835 - 1.015 * words/sentences - 84.6 * syllables/words.
- passive voice: a form of "to be", optionally "not" and an -ly adverb, then
  a past participle (-ed, or a common irregular one such as "written", also
  behind a prefix: "rewritten").
- repeated words: the same word twice in a row ("the the"); overused words:
  a non-stopword of 3+ letters used at least `overuse_threshold` times.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from typing import Any

WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")
#: A run of . ! ? starts only where the previous character is not one (every later start in the run would end
#: the same way), and the run and its closers are possessive (giving back a character can never help):
#: without both, 20 KB of dots took 79 s, each start rescanning the rest of the run.
BOUNDARY = re.compile(r"(?<![.!?])[.!?]++[\"'”’)\]]*+(?=\s|$)|\n[ \t]*\n")
#: an abbreviation is short: the word before a period is looked for in this many characters only.
ABBREVIATION_WINDOW = 32
ABBREVIATIONS = frozenset({"e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "prof", "vs", "cf", "st", "jr", "sr",
                           "inc", "ltd", "no", "fig"})
PASSIVE = re.compile(r"\b(am|is|are|was|were|be|been|being)\s+(?:not\s+)?(?:[a-z]+ly\s+)?([a-z]+)\b", re.IGNORECASE)
IRREGULAR_PARTICIPLES = frozenset("""
    arisen awoken beaten become begun bent bitten blown broken brought built burnt bought caught chosen
    come cut dealt done drawn driven drunk eaten fallen fed felt fought found forbidden forgotten forgiven
    frozen given gone grown hung heard hidden held hurt kept known laid led left lent lost made meant met
    paid put read ridden rung risen run said seen sought sold sent set shaken shown shut sung sunk slain
    spent spoken spun spread stolen struck stuck sworn swept taken taught torn told thought thrown
    understood woken worn won withdrawn written
""".split())
#: "rewritten", "undone", "misled", "overtaken" are their irregular stem with a prefix.
IRREGULAR_PREFIX = re.compile(r"^(?:re|un|over|under|mis|out|fore|with)(?=[a-z]{3})")
#: words ending in -ed that are not participles ("is indeed", "was red").
NOT_PARTICIPLES = frozenset({"bed", "red", "shed", "wed", "need", "feed", "seed", "speed", "weed", "breed", "greed",
                             "indeed", "hundred", "naked", "sacred", "wicked", "kindred", "rugged", "embed"})
REPEATED = re.compile(r"\b([A-Za-z]+)\s+\1\b", re.IGNORECASE)
STOPWORDS = frozenset("""
    a about above after again against all also an and any are aren't as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers herself him himself his how if in into is it its itself just let me more
    most must my myself no nor not now of off on once only or other our ours ourselves out over own same
    she should so some such than that the their theirs them themselves then there these they this those
    through to too under until up very was we were what when where which while who whom why will with would
    you your yours yourself yourselves one two may might shall upon
""".split())
FLESCH_BANDS = ((90, "very easy"), (80, "easy"), (70, "fairly easy"), (60, "standard"), (50, "fairly difficult"),
                (30, "difficult"), (float("-inf"), "very difficult"))
MAX_QUOTE = 160


@dataclass(frozen=True)
class Sentence:
    index: int  # 1-based
    start: int  # character offset
    text: str
    words: int


def words(text: str) -> list[str]:
    return WORD.findall(text)


def syllables(word: str) -> int:
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return 0
    if len(w) <= 3:
        return 1
    w = re.sub(r"(?:[^laeiouyszxcg]es|[^laeiouydt]ed|[^laeiouy]e)$", "", w)
    w = re.sub(r"^y", "", w)
    return max(1, len(re.findall(r"[aeiouy]+", w)))


def sentences(text: str) -> list[Sentence]:
    found: list[Sentence] = []
    start = 0

    def add(end: int) -> None:
        chunk = text[start:end]
        stripped = chunk.strip()
        count = len(words(stripped))
        if count:
            found.append(Sentence(len(found) + 1, start + (len(chunk) - len(chunk.lstrip())), stripped, count))

    for match in BOUNDARY.finditer(text):
        # A window, not text[start:]: after many abbreviations in a row the chunk would grow with each one.
        window = text[max(start, match.start() - ABBREVIATION_WINDOW):match.start()]
        if match.group().startswith(".") and _ends_with_abbreviation(window):
            continue
        add(match.end())
        start = match.end()
    add(len(text))
    return found


def _ends_with_abbreviation(chunk: str) -> bool:
    last = chunk.rsplit(None, 1)[-1] if chunk.strip() else ""
    return last.lower().strip("(\"'") in ABBREVIATIONS


def flesch_reading_ease(text: str) -> float | None:
    all_words = words(text)
    count = len(sentences(text))
    if not all_words or not count:
        return None
    total = sum(syllables(w) for w in all_words)
    return round(206.835 - 1.015 * len(all_words) / count - 84.6 * total / len(all_words), 2)


def band(score: float | None) -> str | None:
    if score is None:
        return None
    return next(name for floor, name in FLESCH_BANDS if score >= floor)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


class LineIndex:
    """Line numbers of many offsets in one text: a binary search each, not a count from the start each."""

    def __init__(self, text: str) -> None:
        self.breaks = [m.start() for m in re.finditer("\n", text)]

    def line_of(self, offset: int) -> int:
        return bisect_left(self.breaks, offset) + 1


def passive_voice(text: str, lines: LineIndex | None = None) -> list[dict[str, Any]]:
    lines = lines or LineIndex(text)
    found = []
    for match in PASSIVE.finditer(text):
        participle = match.group(2).lower()
        if IRREGULAR_PREFIX.sub("", participle) in IRREGULAR_PARTICIPLES or participle in IRREGULAR_PARTICIPLES or (
                participle.endswith("ed") and len(participle) > 3 and participle not in NOT_PARTICIPLES):
            found.append({"line": lines.line_of(match.start()), "offset": match.start(), "text": match.group()})
    return found


def repeated_words(text: str, lines: LineIndex | None = None) -> list[dict[str, Any]]:
    lines = lines or LineIndex(text)
    return [{"word": m.group(1).lower(), "line": lines.line_of(m.start()), "offset": m.start(), "text": m.group()}
            for m in REPEATED.finditer(text)]


def overused_words(text: str, threshold: int = 3) -> list[dict[str, Any]]:
    counts = Counter(w.lower() for w in words(text) if len(w) >= 3 and w.lower() not in STOPWORDS)
    ranked = sorted(((word, n) for word, n in counts.items() if n >= threshold), key=lambda item: (-item[1], item[0]))
    return [{"word": word, "count": n} for word, n in ranked[:20]]


def diagnose(text: str, long_sentence_words: int = 25, overuse_threshold: int = 3) -> dict[str, Any]:
    found = sentences(text)
    all_words = words(text)
    score = flesch_reading_ease(text)
    lines = LineIndex(text)
    return {
        "words": len(all_words),
        "sentences": len(found),
        "syllables": sum(syllables(w) for w in all_words),
        "avg_words_per_sentence": round(len(all_words) / len(found), 2) if found else 0.0,
        "flesch_reading_ease": score,
        "readability": band(score),
        "long_sentences": [{"sentence": s.index, "line": lines.line_of(s.start), "words": s.words,
                            "text": s.text[:MAX_QUOTE]} for s in found if s.words > long_sentence_words],
        "passive_voice": passive_voice(text, lines),
        "repeated_words": repeated_words(text, lines),
        "overused_words": overused_words(text, overuse_threshold),
    }
