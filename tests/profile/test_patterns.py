"""Validated patterns: each kind needs its checksum or structure, not just its shape; masks keep values unreadable."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.profile import hints
from provisioner.profile import patterns as p
from tests.profile import corpus


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("john.doe@example.com", p.EMAIL),
        ("J.Doe+news@Example.CO.UK", p.EMAIL),
        ("chloé@bücher.de", p.EMAIL),
        ("+31612345678", p.PHONE),
        ("+1 (415) 555-0134", p.PHONE),
        ("0031 6 12345678", p.PHONE),
        ("06-12345678", p.PHONE),
        ("020 123 4567", p.PHONE),
        ("(415) 555-0134", p.PHONE),
        ("NL91ABNA0417164300", p.IBAN),
        ("NL91 ABNA 0417 1643 00", p.IBAN),
        ("de89370400440532013000", p.IBAN),
        ("GB82 WEST 1234 5698 7654 32", p.IBAN),
        ("4111 1111 1111 1111", p.CARD),
        ("5555-5555-5555-4444", p.CARD),
        ("378282246310005", p.CARD),
        ("6011111111111117", p.CARD),
        ("192.168.1.20", p.IP),
        ("2001:db8::8a2e:370:7334", p.IP),
        ("123456782", p.NATIONAL_ID),  # Dutch BSN, 11-proof
        ("85.07.30-033.28", p.NATIONAL_ID),  # Belgian national number
        ("12345678Z", p.NATIONAL_ID),  # Spanish DNI
        ("X1234567L", p.NATIONAL_ID),  # Spanish NIE
    ],
)
def test_valid_values_are_classified(value: str, kind: str) -> None:
    assert p.classify(value) == kind


@pytest.mark.parametrize(
    "value",
    [
        "4111 1111 1111 1112",  # Luhn fails
        "490154203237518",  # an IMEI: 15 digits and Luhn-valid, but no issuer prints 15 digits after 49
        "NL91ABNA0417164301",  # mod 97 fails
        "NL91ABNA041716430",  # one character short for NL
        "XX91ABNA0417164300",  # no such country
        "123456789",  # 11-proof fails
        "85.07.30-033.29",  # Belgian check digits wrong
        "12345678A",  # DNI letter wrong
        "256.1.1.1",
        "12:30:00",
        "00:1A:2B:3C:4D:5E",  # a MAC address
        "0.123456789",  # a decimal, not a national number
        "612345678",  # no trunk prefix, no country code
        "(415) 155-0134",  # North American exchange codes never start with 1
        "user@localhost",
        "a@b",
        "tok_Q6XzYyYoW9bQDM1hevGyFe_poc",
        "SKU-12345-AB",
        "2.14.3",
        "",
    ],
)
def test_look_alikes_are_not_pii(value: str) -> None:
    assert p.classify(value) is None


def test_luhn_and_checksums() -> None:
    assert p.luhn("79927398713") and not p.luhn("79927398710")
    assert p.bsn_valid("111222333") and not p.bsn_valid("111222334") and not p.bsn_valid("000000000")
    assert p.belgian_nn_valid(_belgian("850730033", after_2000=False))
    # Born in or after 2000: the check uses a 2 before the nine digits.
    assert p.belgian_nn_valid(_belgian("000125567", after_2000=True))
    assert not p.belgian_nn_valid(_belgian("851330033", after_2000=False)), "month 13"


def _belgian(base: str, *, after_2000: bool) -> str:
    return base + f"{97 - int(('2' if after_2000 else '') + base) % 97:02d}"


def test_free_text_finds_validated_matches_only() -> None:
    text = (
        "Mail anna.b@example.org or +31 6 1234 5678; refund NL91 ABNA 0417 1643 00, card 4111-1111-1111-1111. "
        "Order 4111111111111112 and REF4111111111111111 are no cards; +31 6 is no phone."
    )
    found = list(p.find_in_text(text))
    assert found == [
        (p.EMAIL, "anna.b@example.org"),
        (p.IBAN, "NL91 ABNA 0417 1643 00"),
        (p.CARD, "4111-1111-1111-1111"),
        (p.PHONE, "+31 6 1234 5678"),
    ]


def test_the_digit_groups_of_an_iban_are_not_a_card() -> None:
    # DE.. 4000 0000 0000 0002 holds a Luhn-valid Visa number in its groups.
    iban = "DE" + "{:02d}".format(98 - int("400000000000000200" + "131400") % 97) + "400000000000000200"
    assert p.is_iban(iban)
    spaced = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    assert [k for k, _ in p.find_in_text(f"refund to {spaced} please")] == [p.IBAN]


@pytest.mark.parametrize(
    ("kind", "value", "masked"),
    [
        (p.EMAIL, "john.doe@example.com", "j***@e***.com"),
        (p.PHONE, "+31 6 12345678", "+31*******78"),
        (p.IBAN, "NL91 ABNA 0417 1643 00", "NL**************00"),
        (p.CARD, "4111 1111 1111 1111", "**************11"),
        (p.IP, "192.168.1.20", "192.*.*.*"),
        (p.NATIONAL_ID, "123456782", "*******82"),
        (p.NAME, "Anna van Dijk", "A*** v*** D***"),
    ],
)
def test_masks(kind: str, value: str, masked: str) -> None:
    assert p.mask(kind, value) == masked


def test_person_names_and_dates() -> None:
    assert p.looks_like_person_name("Anna van der Berg")
    assert p.looks_like_person_name("Seán O'Neil-McDonald")
    assert not p.looks_like_person_name("Blue Widget 3000")
    assert not p.looks_like_person_name("ACME")
    assert p.parse_date("1984-03-07") == (1984, 3, 7)
    assert p.parse_date("07-03-1984") == (1984, 3, 7)
    assert p.parse_date("1984-13-07") is None


@pytest.mark.parametrize(
    ("column", "kind"),
    [
        ("email", p.EMAIL),
        ("customerEmail", p.EMAIL),
        ("E-Mail", p.EMAIL),
        ("mobile_nr", p.PHONE),
        ("iban", p.IBAN),
        ("card_number", p.CARD),
        ("client_ip", p.IP),
        ("bsn", p.NATIONAL_ID),
        ("date_of_birth", p.DOB),
        ("geboortedatum", p.DOB),
        ("first_name", p.NAME),
        ("achternaam", p.NAME),
        ("product_name", None),
        ("file_name", None),
        ("hotel", None),
        ("zip", None),
    ],
)
def test_column_name_hints(column: str, kind: str | None) -> None:
    assert hints.name_suggests(column) == kind


@settings(max_examples=100, deadline=None)
@given(st.randoms(use_true_random=False), st.data())
def test_one_wrong_digit_is_always_caught(r: random.Random, data: st.DataObject) -> None:
    """Luhn and mod 97 catch every single-digit error: a typo never passes for a card or an IBAN."""
    for valid, kind in ((corpus.card(r).replace(" ", "").replace("-", ""), p.CARD), (corpus.iban(r), p.IBAN)):
        assert p.classify(valid) == kind
        positions = [i for i, ch in enumerate(valid) if ch.isdigit() and (kind == p.CARD or i >= 4)]
        i = data.draw(st.sampled_from(positions))
        wrong = data.draw(st.sampled_from([d for d in "0123456789" if d != valid[i]]))
        assert p.classify(valid[:i] + wrong + valid[i + 1 :]) != kind
