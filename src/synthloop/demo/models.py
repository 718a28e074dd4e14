"""Two versions of the demo's support assistant for "Lumen Notes", a fictional notes app.

Both answer a support question with the answer of one knowledge-base entry (package data
`synthloop/data/demo/kb.jsonl`), so their replies can be checked against the evalset's
reference answers. They are real (if small) retrieval models, deterministic and fast:

- **v1** (`synthloop.demo.models:v1`): TF-IDF retrieval (word 1-2 grams, sublinear tf) over
  the knowledge base's questions and answers, using only the current message.
- **v2** (`synthloop.demo.models:v2`), the "new version", changes three things:
  1. a synonym table normalises user wording ("laptop" -> "device", "bill" -> "invoice", ...);
  2. a short follow-up ("and on my phone?") is read together with the previous user message
     from the conversation history;
  3. a keyword *intent router* picks a topic first and retrieves only inside it. The router's
     rules are checked in order and the billing rule ("charge", "payment", "card", "plan", ...)
     comes before the refund rule, so refund questions that mention a charge or a plan are
     answered from the billing articles: refunds regress while the other topics improve.

The regression is the point of the demo: v2 is better on average, and only a per-segment
comparison (`segments: [intent]`) shows that refund answers got worse.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from synthloop.schema import EvalCase

_TOKEN_RE = re.compile(r"[a-z0-9]+")

#: v2's synonym table: user words -> the knowledge base's words.
SYNONYMS: dict[str, str] = {
    "bill": "invoice", "bills": "invoice", "receipt": "invoice", "receipts": "invoice",
    "invoices": "invoice", "subscription": "plan", "tier": "plan", "membership": "plan",
    "pricing": "cost", "price": "cost", "prices": "cost", "expensive": "cost",
    "reimburse": "refund", "reimbursed": "refund", "refunded": "refund", "refunds": "refund",
    "pdf": "pdf", "md": "markdown", "backup": "backup", "archive": "backup",
    "download": "export", "save": "export", "saving": "export",
    "create": "new", "hotkey": "shortcut", "hotkeys": "shortcut", "keybinding": "shortcut",
    "keybindings": "shortcut", "shortcuts": "shortcut", "keys": "shortcut",
    "coworker": "team", "colleague": "team", "colleagues": "team", "coworkers": "team",
    "teammates": "team", "teammate": "team", "friend": "someone", "collaborator": "team",
    "passcode": "password", "login": "sign", "log": "sign", "logged": "sign",
    "2fa": "two factor", "mfa": "two factor", "otp": "two factor",
    "appear": "sync", "appearing": "sync", "showing": "sync", "instant": "sync often",
    "internet": "offline", "wifi": "offline", "plane": "offline", "connection": "offline",
    "encrypted": "encryption", "encrypt": "encryption", "secure": "encryption",
    "tracking": "analytics", "telemetry": "analytics", "track": "analytics",
    "gdpr": "personal data", "syncing": "sync", "synced": "sync", "synchronise": "sync",
    "synchronize": "sync",
    "remove": "remove", "kick": "remove", "revoke": "remove",
}

#: v2's intent router: (intent, keywords) checked in order; the first rule that matches wins.
#: The billing rule comes before the refund rule, which is v2's bug.
ROUTER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("billing", ("charge", "charged", "payment", "pay", "paid", "card", "invoice", "billing",
                 "billed", "cost", "discount", "upgrade", "downgrade")),
    ("refund", ("refund", "money back")),
    ("sync", ("sync", "conflicted", "offline", "device")),
    ("shortcuts", ("shortcut", "keyboard", "ctrl", "cmd", "bold", "heading")),
    ("export", ("export", "markdown", "pdf", "backup", "import", "evernote", "print")),
    ("account", ("password", "two factor", "locked", "delete")),
    ("privacy", ("encryption", "privacy", "personal data", "analytics")),
    ("collaboration", ("team", "comment", "collaboration", "same time", "who edited")),
)

#: Words that mark a message as a follow-up needing the previous turn for context.
FOLLOW_UP_WORDS = frozenset({"it", "that", "this", "those", "these", "there", "them", "also",
                             "and", "what", "how", "about", "instead", "too", "then"})

FALLBACK = ("Sorry, I could not find an answer to that in the Lumen Notes help centre. "
            "Could you rephrase your question?")


@dataclass(frozen=True)
class Article:
    """One knowledge-base entry."""

    id: str
    intent: str
    question: str
    answer: str


@lru_cache(maxsize=1)
def knowledge_base() -> tuple[Article, ...]:
    """The demo knowledge base shipped as package data."""
    text = resources.files("synthloop").joinpath("data/demo/kb.jsonl").read_text("utf-8")
    return tuple(Article(**json.loads(line)) for line in text.splitlines() if line.strip())


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _stem(word: str) -> str:
    """A light plural stemmer ("notes" -> "note", "copies" -> "copy")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalise(text: str) -> str:
    """v2's text normalisation: synonyms, then plural stemming."""
    return " ".join(_stem(w) for t in tokens(text) for w in SYNONYMS.get(t, t).split())


class Retriever:
    """TF-IDF retrieval over the knowledge base.

    sklearn's `TfidfVectorizer` is fitted once on the articles (vocabulary, idf); queries are
    then weighted with the same analyzer, sublinear tf, idf and L2 norm, and scored against an
    inverted index of the article vectors, which is many times faster than calling
    `transform` per query (identical scores).
    """

    def __init__(self, articles: tuple[Article, ...], *, preprocess: bool) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.articles = articles
        self.preprocess = preprocess
        docs = [self._prep(f"{a.question} {a.question} {a.answer}") for a in articles]
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True,
                                          stop_words="english", token_pattern=r"[a-z0-9]+")
        matrix = self.vectorizer.fit_transform(docs).tocsc()
        self.analyzer = self.vectorizer.build_analyzer()
        self.idf: np.ndarray = self.vectorizer.idf_
        self.vocabulary: dict[str, int] = dict(self.vectorizer.vocabulary_)
        self.postings: list[tuple[np.ndarray, np.ndarray]] = [
            (matrix.indices[matrix.indptr[j]:matrix.indptr[j + 1]],
             matrix.data[matrix.indptr[j]:matrix.indptr[j + 1]])
            for j in range(matrix.shape[1])]
        self.intents = np.asarray([a.intent for a in articles])

    def _prep(self, text: str) -> str:
        return normalise(text) if self.preprocess else text.lower()

    def scores(self, query: str) -> np.ndarray:
        """Cosine similarity of the query with every article."""
        counts: dict[int, int] = {}
        for term in self.analyzer(self._prep(query)):
            j = self.vocabulary.get(term)
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        out = np.zeros(len(self.articles))
        if not counts:
            return out
        weights = {j: (1.0 + math.log(c)) * float(self.idf[j]) for j, c in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        for j, w in weights.items():
            rows, vals = self.postings[j]
            out[rows] += vals * (w / norm)
        return out

    def best(self, query: str, intent: str | None = None) -> tuple[Article | None, float]:
        s = self.scores(query)
        if intent is not None:
            s = np.where(self.intents == intent, s, -1.0)
        i = int(np.argmax(s))
        if s[i] <= 0.0:
            return None, 0.0
        return self.articles[i], float(s[i])


@lru_cache(maxsize=2)
def _retriever(preprocess: bool) -> Retriever:
    return Retriever(knowledge_base(), preprocess=preprocess)


def route(text: str) -> str | None:
    """v2's keyword intent router (first matching rule wins)."""
    norm = " " + normalise(text) + " "
    for intent, words in ROUTER_RULES:
        for w in words:
            if f" {w} " in norm:
                return intent
    return None


def _previous_user_message(case: EvalCase) -> str | None:
    for m in reversed(case.history):
        if m.role == "user":
            return m.content
    return None


def is_follow_up(text: str) -> bool:
    """A short message that leans on the previous turn ("and on Android?", "still nothing")."""
    return len(tokens(text)) <= 8


def answer_v1(case: EvalCase) -> str:
    article, _ = _retriever(False).best(case.input)
    return article.answer if article else FALLBACK


def answer_v2(case: EvalCase) -> str:
    query = case.input
    prev = _previous_user_message(case)
    if prev is not None and is_follow_up(query):
        query = f"{prev} {query}"
    retriever = _retriever(True)
    intent = route(case.input) or route(query)
    article, _ = retriever.best(query, intent)
    if article is None:
        article, _ = retriever.best(query)
    return article.answer if article else FALLBACK


def v1(case: EvalCase) -> str:
    """Support assistant v1: TF-IDF retrieval on the current message."""
    return answer_v1(case)


def v2(case: EvalCase) -> str:
    """Support assistant v2: synonyms, follow-up context and an intent router (see module doc)."""
    return answer_v2(case)


def describe() -> dict[str, Any]:
    """Facts about the reference models, for docs and reports."""
    return {"articles": len(knowledge_base()),
            "intents": sorted({a.intent for a in knowledge_base()})}
