"""PII scrubbing: what is found and replaced, and (as important) what ordinary text is left alone."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from synthloop.privacy import (
    PII_TYPES,
    Scrubber,
    find_pii,
    iban_valid,
    luhn_valid,
    scrub_text,
)


def luhn_complete(prefix: str) -> str:
    """`prefix` + the check digit that makes it Luhn-valid."""
    for d in "0123456789":
        if luhn_valid(prefix + d):
            return prefix + d
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- positives
@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to jane.doe+news@example.co.uk please", "email", "jane.doe+news@example.co.uk"),
        ("mail: a_b@sub.mail-server.org.", "email", "a_b@sub.mail-server.org"),
        ("to sean.o'brien@example.ie now", "email", "sean.o'brien@example.ie"),
        ("to luca.d’angelo@example.it now", "email", "luca.d’angelo@example.it"),
        ("quoted 'jo@example.com' here", "email", "jo@example.com"),
        ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
        ("US (415) 555-2671 ok", "phone", "(415) 555-2671"),
        ("dial 415-555-2671.", "phone", "415-555-2671"),
        ("or 415.555.2671", "phone", "415.555.2671"),
        ("us 1-415-555-2671 or", "phone", "1-415-555-2671"),
        ("us 1 (415) 555-2671 or", "phone", "1 (415) 555-2671"),
        ("fr 06 12 34 56 78 merci", "phone", "06 12 34 56 78"),
        ("uk 020 7946 0958", "phone", "020 7946 0958"),
        ("cn +86 138 0013 8000", "phone", "+86 138 0013 8000"),
        ("de +49 (0)30 1234567", "phone", "+49 (0)30 1234567"),
        ("tel:+1-415-555-2671", "phone", "+1-415-555-2671"),
        ("visa 4111 1111 1111 1111 exp", "card", "4111 1111 1111 1111"),
        ("mc 5500-0000-0000-0004", "card", "5500-0000-0000-0004"),
        ("amex 378282246310005", "card", "378282246310005"),
        ("iban DE89 3704 0044 0532 0130 00 thanks", "iban", "DE89 3704 0044 0532 0130 00"),
        ("GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
        ("FR14 2004 1010 0505 0001 3M02 606", "iban", "FR14 2004 1010 0505 0001 3M02 606"),
        ("host 192.168.1.10 down", "ip", "192.168.1.10"),
        ("v6 2001:db8::8a2e:370:7334 up", "ip", "2001:db8::8a2e:370:7334"),
        ("link fe80::1ff:fe23:4567:890a", "ip", "fe80::1ff:fe23:4567:890a"),
        ("reset https://example.com/reset?token=abc123XYZ&x=1. now", "url_token",
         "https://example.com/reset?token=abc123XYZ&x=1"),
        ("see https://api.x.io/v1?api_key=sk_live_42", "url_token",
         "https://api.x.io/v1?api_key=sk_live_42"),
        ("https://u:hunter2@db.example.com/x", "url_token", "https://u:hunter2@db.example.com/x"),
        ("invite https://x.io/i/9f8e7d6c5b4a39281706f5e4d3c2b1a0", "url_token",
         "https://x.io/i/9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
        ("s3 https://b.s3.amazonaws.com/f?X-Amz-Signature=deadbeef1", "url_token",
         "https://b.s3.amazonaws.com/f?X-Amz-Signature=deadbeef1"),
        # secret parameter names in any spelling
        ("open https://app.io/cb?accessToken=eyJ0eXAiOi now", "url_token",
         "https://app.io/cb?accessToken=eyJ0eXAiOi"),
        ("open https://app.io/cb?auth_key=9f8e7d now", "url_token", "https://app.io/cb?auth_key=9f8e7d"),
        ("open https://app.io/cb#access-token=abc123 now", "url_token",
         "https://app.io/cb#access-token=abc123"),
        ("open https://app.io/x?clientSecret=s3cr3t now", "url_token",
         "https://app.io/x?clientSecret=s3cr3t"),
    ],
)
def test_detects_each_type(text: str, kind: str, value: str) -> None:
    found = find_pii(text)
    assert [(m.kind, m.value) for m in found] == [(kind, value)]
    scrubbed = scrub_text(text)
    assert value not in scrubbed
    assert f"<{ {'url_token': 'URL'}.get(kind, kind.upper()) }>".replace(" ", "") in scrubbed


# --------------------------------------------------------------------------- negatives
@pytest.mark.parametrize(
    "text",
    [
        "in 2023 we sold 1,234 units at $1,299.99 each",
        "pi is 3.14159 and e is 2.71828",
        "python 3.11.2 and numpy 1.26.4",
        "meet on 2024-01-15 at 10:30 or 15.01.2024 or 01/02/2023 or 01.02.2023",
        "ISBN 978-3-16-148410-0 and order #12345678 and zip 94103",
        "population 1 000 000 and 12 345 people",
        "timestamps 10:30:00 and 23:59:59.999",
        "c++ std::vector<int> and a::b::c and rust Vec::new()",
        "decoy card 4111 1111 1111 1112 stays",
        "decoy 4000 0012 3456 7890 stays",
        "long run 12345678901234567890123 stays",
        "a plain link https://docs.python.org/3/library/re.html stays",
        "query https://shop.example.com/list?sort_key=price&page=2&utm_source=mail stays",
        "slug https://blog.example.com/how-to-install-python-3-on-ubuntu-20-04 stays",
        "not an email: user@localhost or @handle or a@b",
        "DE89 3704 0044 0532 0130 01 has a bad checksum",
        "score 5/10, 7 of 9, +5 points, -3 degrees, 0.5%",
        "version 10.0.19045 and build 22621",
        "zero-padded id 000095037 and ref 0012345678",
        "",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert find_pii(text) == []
    assert scrub_text(text) == text


def test_random_numbers_in_prose_are_not_pii() -> None:
    rng = random.Random(7)
    templates = [
        "{a} items for ${b}.{c}", "in {y} and {y2}", "{a}% of {b}", "page {a} of {b}",
        "{y}-{m:02d}-{d:02d}", "{a}.{b}.{c}", "ratio {a}:{b}", "{a} x {b} = {c}",
    ]
    for _ in range(2_000):
        text = rng.choice(templates).format(
            a=rng.randint(0, 99_999), b=rng.randint(0, 9_999), c=rng.randint(0, 99),
            y=rng.randint(1900, 2100), y2=rng.randint(1900, 2100), m=rng.randint(1, 12),
            d=rng.randint(1, 28))
        assert find_pii(text) == [], text


def test_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert luhn_valid(luhn_complete("37828224631000"))
    assert iban_valid("DE89370400440532013000")
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST12345698765433")
    assert not iban_valid("DE8937040044053201300")  # wrong length for DE


def test_luhn_valid_and_invalid_cards_side_by_side() -> None:
    rng = random.Random(1)
    for _ in range(200):
        body = "4" + "".join(str(rng.randint(0, 9)) for _ in range(14))
        good = luhn_complete(body)
        bad = good[:-1] + str((int(good[-1]) + 1) % 10)
        spaced = " ".join(good[i:i + 4] for i in range(0, 16, 4))
        text = f"pay with {spaced} not {bad}."
        out = scrub_text(text)
        assert spaced not in out and bad in out, text


def test_names_whole_words_case_insensitive_multiword() -> None:
    s = Scrubber(names=["Alice Martin", "Bob", "Zoë"])
    out = s.scrub("Hi alice martin! Bob said BOBBY and bob's friend zoë met Alice.")
    assert out == "Hi <NAME>! <NAME> said BOBBY and <NAME>'s friend <NAME> met Alice."
    assert s.counts["name"] == 4


def test_counts_per_type_and_reset() -> None:
    s = Scrubber()
    s.scrub("a@b.com c@d.org, +44 20 7946 0958; 192.168.0.1 4111111111111111")
    assert dict(s.counts) == {"email": 2, "phone": 1, "card": 1, "iban": 0, "ip": 1,
                              "url_token": 0, "name": 0}
    s.reset_counts()
    assert sum(s.counts.values()) == 0
    assert set(s.counts) == set(PII_TYPES)


def test_detect_subset_only_scrubs_those_types() -> None:
    s = Scrubber(detect=["email"])
    assert s.scrub("x@y.com +44 20 7946 0958") == "<EMAIL> +44 20 7946 0958"
    with pytest.raises(ValueError, match="unknown PII types"):
        Scrubber(detect=["ssn"])


def test_scrub_many_dedup_counts_match_per_text() -> None:
    texts = ["a@b.com", None, "a@b.com", "nothing", "", "+44 20 7946 0958", "a@b.com"]
    many = Scrubber()
    one = Scrubber()
    assert many.scrub_many(texts) == [
        None if t is None else one.scrub(t) for t in texts]
    assert many.counts == one.counts
    assert many.counts["email"] == 3


def test_faker_surrogates_consistent_per_user_and_session() -> None:
    s = Scrubber(names=["Alice"], replace="faker", seed=3)
    a1 = s.scrub("mail alice@example.com, Alice", user_id="u1", session_id="s1")
    a2 = s.scrub("again alice@example.com, ALICE", user_id="u1", session_id="s1")
    b = s.scrub("mail alice@example.com, Alice", user_id="u2", session_id="s1")
    c = s.scrub("mail alice@example.com, Alice", user_id="u1", session_id="s2")
    assert "alice@example.com" not in a1 + a2 + b + c
    e1 = a1.split()[1].rstrip(",")
    assert "@" in e1 and e1 == a2.split()[1].rstrip(",")
    assert a1.split()[-1] == a2.split()[-1]  # same name surrogate, case-insensitive
    assert a1 != b and a1 != c
    # deterministic across instances for the same seed, different for another seed
    again = Scrubber(names=["Alice"], replace="faker", seed=3)
    assert again.scrub("mail alice@example.com, Alice", user_id="u1", session_id="s1") == a1
    other = Scrubber(names=["Alice"], replace="faker", seed=4)
    assert other.scrub("mail alice@example.com, Alice", user_id="u1", session_id="s1") != a1


def test_faker_surrogates_have_the_right_shape() -> None:
    s = Scrubber(replace="faker", seed=0)
    card = s.scrub("4111 1111 1111 1111", user_id="u", session_id="s")
    digits = "".join(ch for ch in card if ch.isdigit())
    assert digits != "4111111111111111" and luhn_valid(digits)
    ip = s.scrub("10.1.2.3", user_id="u", session_id="s")
    assert ip != "10.1.2.3" and ip.count(".") == 3
    iban = s.scrub("GB82WEST12345698765432", user_id="u", session_id="s")
    assert iban != "GB82WEST12345698765432" and iban_valid(iban.replace(" ", ""))


def test_pii_inside_token_url_is_counted_once_as_url() -> None:
    s = Scrubber()
    out = s.scrub("https://x.com/a?email=bob@example.com&token=abc1234567")
    assert out == "<URL>"
    assert s.counts["url_token"] == 1 and s.counts["email"] == 0


def test_card_next_to_other_numbers_is_still_found() -> None:
    assert scrub_text("192.168.0.1 4111111111111111") == "<IP> <CARD>"
    assert scrub_text("ref 1234 4111 1111 1111 1111") == "ref 1234 <CARD>"
    assert scrub_text("+1 415 555 2671 4111111111111111").endswith(" <CARD>")
    assert scrub_text("epoch ms 1700000000123 is not a card") == "epoch ms 1700000000123 is not a card"


def test_plain_url_keeps_its_host_but_not_an_ip() -> None:
    assert scrub_text("see http://192.168.0.7/admin page") == "see http://<IP>/admin page"


def test_real_prompts_are_almost_all_left_alone(shared_data: Path) -> None:
    """3,062 real prompts and transcripts: at most 1 % of them hold anything the scrubber
    takes for PII (the hits are real-looking e-mails, phones, private IPs and token URLs)."""
    texts = [json.loads(line) for line in
             (shared_data / "oasst" / "prompt_lottery_en_250_text.jsonl").open(encoding="utf-8")]
    for line in (shared_data / "arena_hard" / "question_v0.1.jsonl").open(encoding="utf-8"):
        texts.append(json.loads(line)["prompt"])
    with gzip.open(shared_data / "hh_rlhf" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
        texts += [json.loads(line)["chosen"] for line in f]
    s = Scrubber()
    changed = sum(s.scrub(t) != t for t in texts)
    assert len(texts) == 3_062
    assert changed <= 0.01 * len(texts)
    assert s.counts["card"] == 0 and s.counts["iban"] == 0


# --------------------------------------------------------------------------- audit gaps
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("iban de89-3704-0044-0532-0130-00 thanks", "de89-3704-0044-0532-0130-00"),
        ("iban de89370400440532013000.", "de89370400440532013000"),
        ("iban DE89-3704-0044-0532-0130-00 ok", "DE89-3704-0044-0532-0130-00"),
        ("iban de89 3704 0044 0532 0130 00 ok", "de89 3704 0044 0532 0130 00"),
        ("iban gb82 west 1234 5698 7654 32 ok", "gb82 west 1234 5698 7654 32"),
        ("to Fr14-2004-1010-0505-0001-3m02-606", "Fr14-2004-1010-0505-0001-3m02-606"),
    ],
)
def test_iban_in_lower_case_or_with_dashes(text: str, value: str) -> None:
    assert [(m.kind, m.value) for m in find_pii(text)] == [("iban", value)]


@pytest.mark.parametrize(
    "text",
    [
        "iban de89-3704-0044-0532-0130-01 has a bad checksum",
        "iban de89370400440532013001 has a bad checksum",
        "meet at10 am tomorrow and bring the signed forms please",
        "the de12 model and the at34 unit ship in 2024 with 12 parts",
        "sku ab12-cdef-ghij-klmn-opqr-st",
        "commit be12f0a9c3d4e5f60718293a4b5c6d7e8f901234 fixed it",
    ],
)
def test_lower_case_iban_shapes_in_prose_are_not_pii(text: str) -> None:
    assert find_pii(text) == []


def test_iban_right_after_another_candidate_is_found() -> None:
    text = "DE89 3704 0044 0532 0130 00 GB82WEST12345698765432 and ab12 or de89370400440532013000"
    assert [m.value for m in find_pii(text)] == [
        "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "de89370400440532013000"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("call 415-555-2671x123 today", "415-555-2671x123"),
        ("call +1 415 555 2671 ext. 12 today", "+1 415 555 2671 ext. 12"),
        ("call (415) 555-2671 ext 4 now", "(415) 555-2671 ext 4"),
        ("call 020 7946 0958 x 77.", "020 7946 0958 x 77"),
        ("call +44 20 7946 0958 Ext.99", "+44 20 7946 0958 Ext.99"),
        ("call 415.555.2671 extension 3210", "415.555.2671 extension 3210"),
    ],
)
def test_phone_with_extension_is_scrubbed_whole(text: str, value: str) -> None:
    assert [(m.kind, m.value) for m in find_pii(text)] == [("phone", value)]
    assert scrub_text(text) == text.replace(value, "<PHONE>")


@pytest.mark.parametrize(
    "text",
    ["a 1920x1080 screen, 3x4 grid, 2x 10 mg", "order 12345 x 3 items", "ext. 12 and x123"],
)
def test_extension_words_alone_are_not_phones(text: str) -> None:
    assert find_pii(text) == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 up", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
        ("v6 2001:db8:0:0:0:0:0:1 up", "2001:db8:0:0:0:0:0:1"),
        ("v6 2001:0:0:0:0:0:0:1 up", "2001:0:0:0:0:0:0:1"),
        ("v6 2001:db8::1.", "2001:db8::1"),
        ("ping fe80::1%eth0 now", "fe80::1%eth0"),
        ("ping fe80::1ff:fe23:4567:890a%wlan0.", "fe80::1ff:fe23:4567:890a%wlan0"),
        ("mapped ::ffff:1.2.3.4 here", "::ffff:1.2.3.4"),
        ("mapped ::ffff:192.168.1.10.", "::ffff:192.168.1.10"),
        ("nat64 64:ff9b::192.0.2.33 ok", "64:ff9b::192.0.2.33"),
    ],
)
def test_ipv6_forms(text: str, value: str) -> None:
    assert [(m.kind, m.value) for m in find_pii(text)] == [("ip", value)]
    assert scrub_text(text) == text.replace(value, "<IP>")


@pytest.mark.parametrize(
    "text",
    [
        "ratios 16:9:4:3:2:1:0:5 compared",
        "times 10:30:00:00:00:00:00:01 logged",
        "1:2:3:4:5:6:7:8",
        "score 12:30::45 and 1::2 and 3:4::5:6",
        "aspect 16:9 or 4:3, at 10:30:15, verse 3:16, a:b:c and x::y::z",
        "version 1:2.3.4-5 and epoch 2:1.0.0",
    ],
)
def test_colon_separated_small_numbers_are_not_ipv6(text: str) -> None:
    assert find_pii(text) == []
