"""PII scrubbing of free text: detect, then replace by typed placeholders or Faker surrogates.

Detected types (`PII_TYPES`), in the priority order used when two detections overlap:

| type | what | check beyond the pattern |
| --- | --- | --- |
| `url_token` | URLs carrying a secret: `token=`, `key=`, `sig=`, `access_token=`/`accessToken=`, `password=`, ... query parameters, `user:password@` credentials, or a long random path segment | the whole URL is replaced |
| `email` | `name@domain.tld` | |
| `iban` | `DE89 3704 0044 0532 0130 00`, any case, spaces or dashes optional | country length + ISO 13616 mod-97 checksum; lower-case or dashed: a known country, one run or groups of four |
| `card` | 13-19 digits starting 2-6, contiguous or in groups of 3+ split by spaces or dashes (also inside a longer run of numbers) | Luhn checksum; card-shaped Luhn-invalid runs are left alone (and protected from the phone detector) |
| `ip` | IPv4 dotted quads; IPv6 (full or `::`-compressed, with an IPv4 tail `::ffff:1.2.3.4` or a zone `fe80::1%eth0`) | `ipaddress` validation; an IPv6 candidate made only of decimal groups of 1-3 digits (`16:9:4:3:2:1:0:5`, `12:30::45`) is a ratio or a time, not an address |
| `phone` | `+CC ...` international numbers, `(415) 555-2671`, `415-555-2671`, national numbers with a trunk `0` (`020 7946 0958`, `06 12 34 56 78`), each with an optional extension (`x123`, `ext. 12`, `extension 3`) that is scrubbed with it | 7-15 digits before the extension; never part of a longer number |
| `name` | names from a configurable list | whole words, case-insensitive, multi-word names allowed |

Replacement `placeholder` gives `<EMAIL>`, `<PHONE>`, `<CARD>`, `<IBAN>`, `<IP>`, `<URL>`,
`<NAME>`; `faker` gives a realistic surrogate drawn from Faker seeded with
`(seed, user_id, session_id, type, original value)`, so one value maps to the same surrogate
for one user within one session, and runs are reproducible.

Ordinary numbers are not PII: years, prices, decimals, versions, dates, times, order numbers
and Luhn-invalid digit runs are left as they are (see tests/test_pii.py).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

PII_TYPES: tuple[str, ...] = ("email", "phone", "card", "iban", "ip", "url_token", "name")
"""Every PII type the scrubber counts, in the order used by reports."""

_PRIORITY: tuple[str, ...] = ("url_token", "email", "iban", "card", "ip", "phone", "name")

PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "card": "<CARD>",
    "iban": "<IBAN>",
    "ip": "<IP>",
    "url_token": "<URL>",
    "name": "<NAME>",
}

Replace = Literal["placeholder", "faker"]


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One detected piece of PII: its type and its span in the text."""

    kind: str
    start: int
    end: int
    value: str


# --------------------------------------------------------------------------- patterns
# Cheap gates: a text is scanned only when it holds '@', '://', ':' runs (IPv6) or a digit;
# the digit count then decides which detectors can possibly match (see Scrubber.find).
_ANY_DIGIT = re.compile(r"\d")

_URL = re.compile(r"""(?i)\b(?:https?|ftp)://[^\s<>"'`]+""")
_URL_TRAILING = ".,;:!?)]}'\""
_SECRET_KEYS = frozenset(
    {
        "token", "access_token", "refresh_token", "id_token", "auth_token", "auth", "authorization",
        "key", "api_key", "apikey", "api-key", "access_key", "secret", "client_secret",
        "password", "passwd", "pass", "pwd", "sig", "signature", "session", "sessionid",
        "session_id", "sid", "code", "otp", "jwt", "bearer", "credential", "credentials",
        "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
        "private_token", "reset_token", "invite", "magic", "hash", "nonce",
    }
)
_SEGMENT_PIECE = re.compile(r"[-_.~]")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_EMAIL = re.compile(
    # an apostrophe inside the local part (o'brien@, d’angelo@) belongs to the address
    r"(?<![\w.%+-])(?<!\w['’])(?:[\w.%+-]+['’](?=\w))*[\w.%+-]*\w@"
    r"(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W\d_]{2,}(?![\w-]*@)"
)

# Any case, single spaces or dashes between characters; `_iban_span` decides (see there).
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")
_IBAN_SEP = re.compile(r"[ -]")
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}

# A run of >= 13 digits, optionally grouped by single spaces or dashes, not glued to a word,
# and not a '+'-prefixed phone number. Cards are looked for inside it (see _card_in_run).
_DIGIT_RUN = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,}")
_GROUP = re.compile(r"\d+")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
# full or `::`-compressed, optionally ending in an IPv4 address (`::ffff:1.2.3.4`) and a zone
# (`fe80::1%eth0`); `_ipv6_ok` validates and drops colon-separated small numbers
_IPV6 = re.compile(
    rf"(?<![\w:.])(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}(?:{_OCTET}(?:\.{_OCTET}){{3}}|[0-9A-Fa-f]{{0,4}})"
    r"(?:%\w+)?(?![\w:]|\.\d)"
)

_PHONE = re.compile(
    r"""
    (?<![\w+/.,-])(?<!\d[ ])(?<!\d:)
    (?:
        \+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]?\d{1,5}){1,5}   # +44 20 7946 0958
      | \(\d{2,5}\)[ .-]?\d{2,4}(?:[ .-]?\d{2,5}){1,3}                       # (415) 555-2671
      | \d{3}[ .-]\d{3}[ .-]\d{4}                                              # 415-555-2671
      | 1[ .-](?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}                      # 1-415-555-2671
      | 0\d{1,4}[ .-]\d{2,5}(?:[ .-]?\d{2,5}){1,3}                            # 020 7946 0958
    )
    (?P<ext>[ ]?(?i:x|ext[.:]?|extension)[ ]?\d{1,6})?                     # x123, ext. 12
    (?![\w]|[ .,:/-]\d)
    """,
    re.VERBOSE,
)
_DIGITS = re.compile(r"\d")
_SEPARATORS = re.compile(r"[ -]")
_DATE_LIKE = re.compile(r"^\d{4}[-.]\d{2}[-.]\d{2}$|^\d{2}[-.]\d{2}[-.]\d{4}$")

_WORD = re.compile(r"\w+")
_NAME_GAP = " \t\r\n'’-"


# --------------------------------------------------------------------------- checks
def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn (mod 10) checksum."""
    total = 0
    parity = len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)  # any Unicode decimal digit
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """True when an upper-case IBAN without spaces passes the ISO 13616 mod-97 check."""
    if len(compact) < 15 or len(compact) > 34 or not compact[:2].isalpha():
        return False
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


_KEY_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
# a parameter whose last word is one of these holds a secret whatever comes before it
# (accessToken, auth-token, client_secret, X-Upload-Signature); `key` only after these
_SECRET_LAST = frozenset({"token", "secret", "password", "passwd", "signature", "credential",
                          "credentials"})
_KEY_OWNERS = frozenset({"api", "access", "auth", "secret", "private", "client", "signing",
                         "session", "master", "license", "subscription"})


def _secret_key(name: str) -> bool:
    """A query/fragment parameter name that carries a secret: a known name in any spelling
    (`access_token`, `accessToken`, `access-token`, `ACCESS_TOKEN`)."""
    if name.lower() in _SECRET_KEYS:
        return True
    words = [w.lower() for w in _KEY_WORDS.findall(name)]
    if not words:
        return False
    if "_".join(words) in _SECRET_KEYS or "".join(words) in _SECRET_KEYS:
        return True
    last = words[-1]
    return last in _SECRET_LAST or (last == "key" and len(words) > 1 and words[-2] in _KEY_OWNERS)


def _url_has_secret(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.password or (parts.username and "@" in parts.netloc):
        return True
    for key, value in [*parse_qsl(parts.query), *parse_qsl(parts.fragment)]:
        if value and _secret_key(key):
            return True
    return any(_random_segment(segment) for segment in parts.path.split("/"))


def _random_segment(segment: str) -> bool:
    """A path segment that looks like a secret: a UUID or a long letters+digits run."""
    if len(segment) < 16:
        return False
    if _UUID.match(segment):
        return True
    for piece in _SEGMENT_PIECE.split(segment):
        if len(piece) >= 16 and piece.isalnum() and piece.isascii():
            digits = sum(c.isdigit() for c in piece)
            if digits >= 2 and len(piece) - digits >= 2:
                return True
    return False


# --------------------------------------------------------------------------- scrubber
class Scrubber:
    """Find and replace PII in free text; counts every replacement per type in `counts`.

        scrubber = Scrubber(names=["Alice Martin"], replace="placeholder")
        scrubber.scrub("Mail alice@example.com or call +44 20 7946 0958")
        # 'Mail <EMAIL> or call <PHONE>'

    Not thread-safe (counts and the surrogate cache are plain attributes).
    """

    def __init__(
        self,
        names: Iterable[str] = (),
        *,
        replace: Replace = "placeholder",
        seed: int = 0,
        detect: Iterable[str] = PII_TYPES,
        locale: str = "en_US",
    ) -> None:
        self.replace: Replace = replace
        self.seed = seed
        self.locale = locale
        self.detect = frozenset(detect)
        unknown = self.detect - set(PII_TYPES)
        if unknown:
            raise ValueError(f"unknown PII types {sorted(unknown)}; known: {', '.join(PII_TYPES)}")
        self.counts: Counter[str] = Counter({k: 0 for k in PII_TYPES})
        self._names: dict[str, list[tuple[str, ...]]] = {}
        if "name" in self.detect:
            for name in names:
                tokens = tuple(t.casefold() for t in _WORD.findall(name))
                if tokens:
                    self._names.setdefault(tokens[0], []).append(tokens)
            for cands in self._names.values():
                cands.sort(key=len, reverse=True)
        self._faker: Any = None
        self._surrogates: dict[tuple[str, str, str, str], str] = {}

    # ------------------------------------------------------------------ detection
    def find(self, text: str) -> list[PiiMatch]:
        """Every PII match in `text`, non-overlapping, sorted by position."""
        has_digit = _ANY_DIGIT.search(text) is not None
        scan = has_digit or "@" in text or ":" in text
        if not scan and not self._names:
            return []
        # (start, end, kind); kind None = protected span (a long non-card digit run)
        spans: list[tuple[int, int, str | None]] = []
        if scan:
            det = self.detect
            digits = len(_DIGITS.findall(text)) if has_digit else 0
            if "url_token" in det and "://" in text:
                for m in _URL.finditer(text):
                    url = m.group(0).rstrip(_URL_TRAILING)
                    if _url_has_secret(url):
                        spans.append((m.start(), m.start() + len(url), "url_token"))
            if "email" in det and "@" in text:
                for m in _EMAIL.finditer(text):
                    _claim(spans, m.start(), m.end(), "email")
            if "iban" in det and digits >= 2:
                pos = 0
                while (cand := _IBAN.search(text, pos)) is not None:
                    # a candidate that is not an IBAN may have run into one: look again
                    # from its next character rather than from its end
                    span = self._iban_span(text, cand.start(), cand.end())
                    if span is not None:
                        _claim(spans, span[0], span[1], "iban")
                        pos = span[1]
                    else:
                        pos = cand.start() + 1
            for m in _DIGIT_RUN.finditer(text) if digits >= 13 else ():
                card, protect = _card_in_run(m.group(0))
                if card is not None and "card" in det:
                    _claim(spans, m.start() + card[0], m.start() + card[1], "card")
                elif protect:
                    # Luhn-invalid card-shaped runs are not PII; no other detector may eat them.
                    _claim(spans, m.start(), m.end(), None)
            if "ip" in det:
                # IPv6 first: an IPv4-mapped address (::ffff:1.2.3.4) is one address
                if "::" in text or text.count(":") >= 6:
                    for m in _IPV6.finditer(text):
                        if _ipv6_ok(m.group(0)):
                            _claim(spans, m.start(), m.end(), "ip")
                if digits >= 4 and "." in text:
                    for m in _IPV4.finditer(text):
                        _claim(spans, m.start(), m.end(), "ip")
            if "phone" in det and digits >= 7:
                for m in _PHONE.finditer(text):
                    value = m.group(0)
                    number = value if m.start("ext") < 0 else text[m.start():m.start("ext")]
                    n = len(_DIGITS.findall(number))
                    low = 8 if value[0] == "+" else 7
                    if low <= n <= 15 and not _DATE_LIKE.match(value):
                        _claim(spans, m.start(), m.end(), "phone")
        if self._names:
            for start, end in self._find_names(text):
                _claim(spans, start, end, "name")
        if not spans:
            return []
        spans.sort()
        return [PiiMatch(kind, a, b, text[a:b]) for a, b, kind in spans if kind is not None]

    def _iban_span(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        # Walk the candidate's characters (skipping single spaces and dashes) and try the
        # country's length first, then every plausible length, longest first; the checksum
        # decides. Upper case with spaces is the print form and is taken as it comes; a
        # lower-case or dashed candidate (which prose and ids resemble more often) must name a
        # known country and be one run of characters or groups of four.
        positions = [i for i in range(start, end) if text[i] != " " and text[i] != "-"]
        compact = "".join(text[i] for i in positions).upper()
        expected = _IBAN_LENGTHS.get(compact[:2])
        lengths = [expected] if expected is not None else range(min(len(compact), 34), 14, -1)
        for n in lengths:
            if n > len(compact):
                continue
            if iban_valid(compact[:n]):
                stop = positions[n - 1] + 1
                if stop < len(text) and text[stop].isalnum():
                    continue
                written = text[start:stop]
                if ("-" in written or not written.isupper()) and (
                        expected is None or not _iban_grouping_ok(written)):
                    continue
                return start, stop
        return None

    def _find_names(self, text: str) -> list[tuple[int, int]]:
        words = list(_WORD.finditer(text))
        if not words:
            return []
        lowered = [w.group(0).casefold() for w in words]
        spans: list[tuple[int, int]] = []
        i = 0
        while i < len(words):
            cands = self._names.get(lowered[i])
            hit = 0
            if cands:
                for tokens in cands:
                    k = len(tokens)
                    if tuple(lowered[i:i + k]) != tokens:
                        continue
                    gaps_ok = all(
                        words[j].end() < words[j + 1].start()
                        and not text[words[j].end():words[j + 1].start()].strip(_NAME_GAP)
                        for j in range(i, i + k - 1)
                    )
                    if gaps_ok:
                        hit = k
                        break
            if hit:
                spans.append((words[i].start(), words[i + hit - 1].end()))
                i += hit
            else:
                i += 1
        return spans

    def contains_pii(self, text: str) -> bool:
        """True when `text` holds any detectable PII (nothing is counted)."""
        return bool(self.find(text))

    # ------------------------------------------------------------------ replacement
    def scrub(self, text: str, *, user_id: str | None = None, session_id: str | None = None) -> str:
        """`text` with every PII match replaced; `counts` grows by the matches found."""
        found = self.find(text)
        if not found:
            return text
        for m in found:
            self.counts[m.kind] += 1
        return self.redact(text, found, user_id, session_id)

    def redact(self, text: str, found: list[PiiMatch], user_id: str | None = None,
               session_id: str | None = None) -> str:
        """`text` with the given matches (from `find(text)`) replaced; nothing is counted."""
        if not found:
            return text
        out: list[str] = []
        pos = 0
        for m in found:
            out.append(text[pos:m.start])
            out.append(self.replacement(m.kind, m.value, user_id=user_id, session_id=session_id))
            pos = m.end
        out.append(text[pos:])
        return "".join(out)

    def scrub_many(
        self,
        texts: Sequence[Any],
        user_ids: Sequence[Any] | None = None,
        session_ids: Sequence[Any] | None = None,
    ) -> list[Any]:
        """Scrub a column of texts; non-strings (None, NaN) are passed through unchanged.

        With placeholders (which do not depend on the user) each distinct text is scanned once.
        """
        out: list[Any] = list(texts)
        if self.replace == "placeholder":
            cache: dict[str, tuple[str, list[str]]] = {}
            for i, text in enumerate(out):
                if not isinstance(text, str) or not text:
                    continue
                hit = cache.get(text)
                if hit is None:
                    found = self.find(text)
                    hit = (self.redact(text, found, None, None), [m.kind for m in found])
                    cache[text] = hit
                out[i] = hit[0]
                for kind in hit[1]:
                    self.counts[kind] += 1
            return out
        for i, text in enumerate(out):
            if isinstance(text, str) and text:
                uid = None if user_ids is None else user_ids[i]
                sid = None if session_ids is None else session_ids[i]
                out[i] = self.scrub(text, user_id=None if uid is None else str(uid),
                                    session_id=None if sid is None else str(sid))
        return out

    def replacement(self, kind: str, value: str, *, user_id: str | None = None,
                    session_id: str | None = None) -> str:
        """The placeholder or Faker surrogate for one detected value."""
        if self.replace == "placeholder":
            return PLACEHOLDERS[kind]
        key = (kind, user_id or "", session_id or "", value.casefold() if kind == "name" else value)
        cached = self._surrogates.get(key)
        if cached is None:
            cached = self._surrogate(key)
            self._surrogates[key] = cached
        return cached

    def _surrogate(self, key: tuple[str, str, str, str]) -> str:
        if self._faker is None:
            from faker import Faker

            self._faker = Faker(self.locale)
        fake = self._faker
        kind, _, _, value = key
        for attempt in range(8):
            material = "\x1f".join((str(self.seed), *key, str(attempt))).encode()
            fake.seed_instance(int.from_bytes(hashlib.sha256(material).digest()[:8], "big"))
            if kind == "email":
                s = fake.email()
            elif kind == "phone":
                s = fake.phone_number()
            elif kind == "card":
                s = fake.credit_card_number()
            elif kind == "iban":
                s = fake.iban()
            elif kind == "ip":
                s = fake.ipv6() if ":" in value else fake.ipv4_private()
            elif kind == "url_token":
                s = fake.url()
            else:
                s = fake.name() if len(_WORD.findall(value)) > 1 else fake.first_name()
            if s.casefold() != value.casefold():
                return str(s)
        return PLACEHOLDERS[kind]  # pragma: no cover - eight equal draws in a row

    def reset_counts(self) -> None:
        self.counts = Counter({k: 0 for k in PII_TYPES})


def _card_shaped(run: str) -> bool:
    """13-19 digits starting 2-6 (the card networks' ranges), in one group or in groups of 3+."""
    digits = _SEPARATORS.sub("", run)
    if not (13 <= len(digits) <= 19) or digits[0] not in "23456" or len(set(digits)) == 1:
        return False
    groups = _GROUP.findall(run)
    return len(groups) == 1 or all(len(g) >= 3 for g in groups)


def _card_in_run(run: str) -> tuple[tuple[int, int] | None, bool]:
    """A Luhn-valid card in a digit run, and whether the run is a card-shaped decoy.

    Returns (span of the card or None, protect): the whole run when it is a card, else the
    longest (then leftmost) stretch of whole digit groups that is one (a card typed beside a
    phone number or an IP); `protect` is True for a card-shaped but Luhn-invalid run, which no
    other detector may then eat (it is left exactly as it is)."""
    if _card_shaped(run):
        if luhn_valid(_SEPARATORS.sub("", run)):
            return (0, len(run)), False
        protect = True
    else:
        protect = False
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    best: tuple[int, int, int] | None = None  # (digits, -start, end)
    for i in range(len(groups)):
        for j in range(i, len(groups)):
            if (i, j) == (0, len(groups) - 1):
                continue
            piece = run[groups[i][0]:groups[j][1]]
            if _card_shaped(piece) and luhn_valid(_SEPARATORS.sub("", piece)):
                cand = (len(_SEPARATORS.sub("", piece)), -groups[i][0], groups[j][1])
                if best is None or cand > best:
                    best = cand
            if groups[j][1] - groups[i][0] > 40:
                break
    if best is not None:
        return (-best[1], best[2]), False
    return None, protect


def _iban_grouping_ok(written: str) -> bool:
    """An IBAN written as one run, as its first four characters and the rest, or in groups of
    four (the last one shorter), with one kind of separator."""
    groups = _IBAN_SEP.split(written)
    if len(groups) == 1:
        return True
    if " " in written and "-" in written:
        return False
    if len(groups) == 2 and len(groups[0]) == 4:
        return True
    return all(len(g) == 4 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 4


def _claim(spans: list[tuple[int, int, str | None]], start: int, end: int, kind: str | None
           ) -> None:
    """Add a span unless it overlaps one claimed before (earlier detectors win)."""
    for a, b, _ in spans:
        if start < b and end > a:
            return
    spans.append((start, end, kind))


def _ipv6_ok(candidate: str) -> bool:
    address = candidate.partition("%")[0]
    if address.count(":") < 2 or sum(c != ":" for c in address) < 4:
        return False
    if "::" not in address and address.count(":") != (6 if "." in address else 7):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    # Ratios, times and scores (16:9:4:3:2:1:0:5, 12:30::45) are valid IPv6 too. An address
    # as people write it has a hex letter, a four-digit group (2001:) or an IPv4 tail.
    return "." in address or any(
        len(group) == 4 or not group.isdigit() for group in address.split(":") if group)


_DEFAULT_SCRUBBER: Scrubber | None = None


def scrub_text(text: str, *, names: Iterable[str] = (), replace: Replace = "placeholder",
               seed: int = 0, user_id: str | None = None, session_id: str | None = None) -> str:
    """Scrub one text with a default (or one-off, when `names` are given) Scrubber."""
    global _DEFAULT_SCRUBBER
    names = list(names)
    if names or replace != "placeholder" or seed:
        return Scrubber(names, replace=replace, seed=seed).scrub(
            text, user_id=user_id, session_id=session_id)
    if _DEFAULT_SCRUBBER is None:
        _DEFAULT_SCRUBBER = Scrubber()
    return _DEFAULT_SCRUBBER.scrub(text)


def find_pii(text: str, *, names: Iterable[str] = ()) -> list[PiiMatch]:
    """Every PII match in `text` (nothing is replaced or counted)."""
    return Scrubber(names).find(text)
