"""Text helpers shared by the match and similarity scorers: normalisation, tokens, LCS, numbers."""

from __future__ import annotations

import itertools
import re
import string
import unicodedata
from collections.abc import Sequence
from functools import cache

_WS = re.compile(r"\s+")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_DIGIT = re.compile(r"\d")
# A sign counts only where a number can start (not in "5-10" or "2024-01-15", whose hyphens are
# dashes); U+2212 is the typographic minus. A currency symbol may sit between sign and digits.
_NUMBER = re.compile(r"(?:(?<![\w.])[-+\u2212])?[$€£¥]?"
                     r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_NOT_IN_FLOAT = str.maketrans({",": None, "$": None, "€": None, "£": None, "¥": None,
                               "\u2212": "-"})


@cache
def _marks() -> str:
    """A regex character-class body holding every combining mark (Unicode categories Mn, Mc,
    Me). Python's `\\w` leaves them out, which would cut "हिन्दी" into the consonants
    ह, न, द and drop the vowel signs: marks belong to the word they sit on."""
    spans: list[list[int]] = []
    for cp in itertools.chain(range(0x20000), range(0xE0000, 0xE1000)):  # every mark's plane
        if unicodedata.category(chr(cp))[0] == "M":
            if spans and spans[-1][1] == cp - 1:
                spans[-1][1] = cp
            else:
                spans.append([cp, cp])
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in spans)


@cache
def _token_re() -> re.Pattern[str]:
    return re.compile(rf"[\w{_marks()}]+")


@cache
def _punct_re() -> re.Pattern[str]:
    return re.compile(rf"[^\w\s{_marks()}]")


def nfc(text: str) -> str:
    """`text` in Unicode NFC, so canonically equivalent spellings ("é" as one code point or as
    "e" + a combining accent) compare equal."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


_ARTICLE_SET = frozenset({"a", "an", "the"})
_ASCII_PUNCT = "".join(c for c in string.punctuation if c != "_")
_PUNCT_TO_SPACE = str.maketrans({c: " " for c in _ASCII_PUNCT})
_PUNCT_DROP = str.maketrans({c: None for c in _ASCII_PUNCT})


def normalize(text: str, *, lowercase: bool = True, strip_punctuation: bool = True,
              remove_articles: bool = True, collapse_whitespace: bool = True) -> str:
    """SQuAD-style normalisation (each step optional): lowercase, drop punctuation and English
    articles, collapse whitespace; always trims. Unicode text is compared in NFC form."""
    text = nfc(text)
    if lowercase:
        text = text.lower()
    if strip_punctuation:
        if text.isascii():  # fast path: str.translate instead of a regex
            text = text.translate(_PUNCT_TO_SPACE if collapse_whitespace else _PUNCT_DROP)
        else:
            text = _punct_re().sub(" " if collapse_whitespace else "", text)
    if collapse_whitespace:
        words = text.split()
        if remove_articles:
            words = [w for w in words if w not in _ARTICLE_SET]
        return " ".join(words)
    if remove_articles:
        text = _ARTICLES.sub(" ", text)
    return text.strip()


# byte c → c for ASCII word characters [A-Za-z0-9_], else a space (bytes.translate is C-fast)
_NONWORD_TO_SPACE = bytes(c if c < 128 and (chr(c).isalnum() or c == 95) else 32
                          for c in range(256))


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens (Unicode `\\w+` runs, with the combining marks of a word kept
    in it; text in NFC form): punctuation and spacing never count."""
    if text.isascii():  # fast path, same tokens as the regex: non-word ASCII → space, split
        return text.lower().encode("ascii").translate(_NONWORD_TO_SPACE).decode("ascii").split()
    return _token_re().findall(nfc(text).lower())


def _counts(toks: Sequence[str]) -> dict[str, int]:
    d: dict[str, int] = {}
    get = d.get
    for t in toks:
        d[t] = get(t, 0) + 1
    return d


def token_f1(pred: Sequence[str], ref: Sequence[str]) -> float:
    """Bag-of-tokens F1 (SQuAD): 1.0 when both are empty, 0.0 when only one is."""
    return best_token_f1(pred, [ref])


def best_token_f1(pred: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """The best token F1 of `pred` against any of `refs` (0.0 with no references); the
    prediction's counts are built once."""
    if not refs:
        return 0.0
    pc = _counts(pred)
    n = len(pred)
    best = 0.0
    for ref in refs:
        if not n or not ref:
            f1 = 1.0 if not n and not ref else 0.0
        else:
            rc = _counts(ref)
            small, big = (pc, rc) if len(pc) <= len(rc) else (rc, pc)
            same = 0
            for k, v in small.items():
                w = big.get(k)
                if w:
                    same += v if v < w else w
            f1 = 2 * same / (n + len(ref))  # = 2PR/(P+R) with P=same/n, R=same/len(ref)
        if f1 > best:
            best = f1
            if best == 1.0:
                break
    return best


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (or two strings).

    Bit-parallel (Allison-Dix / Hyyrö): one big-int update per token of the shorter list, so
    it runs in O(len(shorter)) Python operations instead of the O(n*m) dynamic programme.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m:
            u = v & m
            v = (v + u) | (v - u)
    return len(a) - (v & full).bit_count()


def rouge_l(pred: Sequence[str], ref: Sequence[str]) -> float:
    """ROUGE-L F1 over tokens: LCS-based precision and recall."""
    if not pred or not ref:
        return 1.0 if not pred and not ref else 0.0
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    p = lcs / len(pred)
    r = lcs / len(ref)
    return 2 * p * r / (p + r)


def fuzzy_ratio(a: str, b: str) -> float:
    """Character-level similarity 2·LCS / (len a + len b) of the lowercased, whitespace-
    collapsed strings: the normalised Indel similarity (the definition of rapidfuzz's
    `fuzz.ratio`), computed with the bit-parallel LCS."""
    a2 = " ".join(nfc(a).lower().split())
    b2 = " ".join(nfc(b).lower().split())
    total = len(a2) + len(b2)
    if total == 0:
        return 1.0
    return 2 * lcs_length(a2, b2) / total


def numbers(text: str) -> list[float]:
    """Every number in `text` (thousands separators, signs, currency symbols and exponents
    allowed), in order. A hyphen between digits or after a word is a dash, not a minus."""
    out: list[float] = []
    if not _DIGIT.search(text):
        return out
    for m in _NUMBER.finditer(text):
        try:
            out.append(float(m.group(0).translate(_NOT_IN_FLOAT)))
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
    return out


def shorten(text: str, limit: int = 120) -> str:
    """One line, at most `limit` characters, for explanations."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
