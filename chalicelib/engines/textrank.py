"""Bounded BM25 text relevance for the recommendation engine. Pure: no I/O.

Tokens are lowercase ASCII words and digits (capabilities like "aws-keys" split into "aws" and "keys"),
stopwords dropped, with a light suffix stemmer so "secrets"/"secret" and "scanning"/"scan" meet. Every text
is cut to `MAX_TEXT_CHARS` before tokenizing and a query keeps its first `MAX_QUERY_TERMS` distinct terms,
so scoring costs O(query terms + corpus tokens): linear in the input, whatever anyone stores.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_TEXT_CHARS = 4000
MAX_QUERY_TERMS = 64
K1 = 1.2
B = 0.75
WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    "a an and are as at be by can do for from has have how i if in into is it its me my of on or our please "
    "should so that the their them then there these this those to up us we what when which who will with "
    "would you your all any each every one some such than too very just also not no".split())


def stem(word: str) -> str:
    for suffix in ("ingly", "edly", "ing", "ies", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if suffix == "ies":
                return base + "y"
            if len(base) >= 4 and base[-1] == base[-2] and suffix in ("ing", "ed"):  # "scanning" -> "scan"
                base = base[:-1]
            return base
    return word


def tokenize(text: str) -> list[str]:
    return [stem(w) for w in WORD.findall(text[:MAX_TEXT_CHARS].lower()) if len(w) > 1 and w not in STOPWORDS]


def query_terms(text: str) -> tuple[list[str], bool]:
    """Distinct terms in order of first use, at most MAX_QUERY_TERMS; and whether any were left out."""
    seen: dict[str, None] = {}
    for token in tokenize(text):
        seen.setdefault(token, None)
    terms = list(seen)
    return terms[:MAX_QUERY_TERMS], len(terms) > MAX_QUERY_TERMS or len(text) > MAX_TEXT_CHARS


@dataclass(frozen=True)
class Match:
    score: float
    terms: list[dict[str, float | int | str]]


def bm25(query: Sequence[str], documents: Sequence[str]) -> list[Match]:
    """Okapi BM25 of each document for the query terms, with each matched term's share."""
    docs = [Counter(tokenize(d)) for d in documents]
    lengths = [sum(c.values()) for c in docs]
    n = len(docs)
    avg = (sum(lengths) / n) if n else 0.0
    df = {t: sum(1 for c in docs if t in c) for t in query}
    out = []
    for counts, length in zip(docs, lengths, strict=True):
        total, terms = 0.0, []  # type: tuple[float, list[dict[str, float | int | str]]]
        for t in query:
            tf = counts.get(t, 0)
            if not tf:
                continue
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            norm = 1 - B + B * (length / avg if avg else 0.0)
            part = idf * tf * (K1 + 1) / (tf + K1 * norm)
            total += part
            terms.append({"term": t, "tf": tf, "idf": round(idf, 4), "contribution": round(part, 4)})
        out.append(Match(total, sorted(terms, key=lambda m: -float(m["contribution"]))))
    return out
