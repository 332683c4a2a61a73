"""Validated PII patterns: what a value is (or holds), and how to show it masked.

A regex alone finds too much (every 16-digit number looks like a card), so each kind is a shape followed by the
check the real thing carries: IBAN mod-97 with the country's length, Luhn and an issuer prefix for cards, the
Dutch BSN 11-proof, the Belgian national number's mod-97, the Spanish DNI/NIE letter, ``ipaddress`` for IPs,
digit counts and a trunk or country prefix for phones.

``classify`` says which kind a whole value is; ``find_in_text`` finds the kinds embedded in free text (only the
kinds that stay unambiguous inside prose: email, IBAN, card, international phone). Values are never logged;
``mask`` turns a match into evidence a person may see (``j***@e***.com``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

EMAIL, PHONE, IBAN, CARD, IP, NATIONAL_ID, DOB, NAME = (
    "email",
    "phone",
    "iban",
    "card",
    "ip",
    "national-id",
    "dob",
    "name",
)
PATTERN_KINDS: tuple[str, ...] = (EMAIL, IBAN, CARD, IP, NATIONAL_ID, PHONE)
"""Kinds recognised from a value alone, in the order a value is classified (most specific check first)."""
TEXT_KINDS: tuple[str, ...] = (EMAIL, IBAN, CARD, PHONE)
"""Kinds looked for inside free text."""

# Letters and digits of any script (internationalised addresses: ``chloé@bücher.de``), as RFC 6531 allows.
_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_EMAIL_BODY = rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[^\W\d_]{{2,24}}"
_EMAIL = re.compile(_EMAIL_BODY)
_EMAIL_IN_TEXT = re.compile(rf"(?<![\w.+-]){_EMAIL_BODY}(?![\w-])")

_PHONE_SHAPE = re.compile(r"\+?\(?\d[\d ().-]{5,22}\d")
_DECIMAL = re.compile(r"\d+[.,]\d+")
_NANP = re.compile(r"\(?[2-9]\d{2}\)?[ .-]?[2-9]\d{2}[ .-]\d{4}")
_PHONE_IN_TEXT = re.compile(r"(?<![\w+])\+[1-9][\d ().-]{6,20}\d(?!\d)")
_NON_DIGITS = re.compile(r"\D")

_IBAN_SHAPE = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}")
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})(\d{2})")
# Lengths from the SWIFT IBAN registry; an unknown country code is not an IBAN.
_IBAN_LENGTHS = {
    **dict.fromkeys(["NO"], 15),
    **dict.fromkeys(["BE"], 16),
    **dict.fromkeys(["DK", "FI", "FO", "GL", "NL", "SD"], 18),
    **dict.fromkeys(["MK", "SI"], 19),
    **dict.fromkeys(["AT", "BA", "EE", "KZ", "LT", "LU", "XK"], 20),
    **dict.fromkeys(["CH", "HR", "LI", "LV"], 21),
    **dict.fromkeys(["BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"], 22),
    **dict.fromkeys(["AE", "GI", "IL", "IQ", "TL"], 23),
    **dict.fromkeys(["AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"], 24),
    **dict.fromkeys(["LY", "PT", "ST"], 25),
    **dict.fromkeys(["IS", "TR"], 26),
    **dict.fromkeys(["FR", "GR", "IT", "MC", "MR", "SM"], 27),
    **dict.fromkeys(["AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV"], 28),
    **dict.fromkeys(["BR", "EG", "PS", "QA", "UA"], 29),
    **dict.fromkeys(["JO", "KW", "MU"], 30),
    **dict.fromkeys(["MT", "SC"], 31),
    **dict.fromkeys(["LC"], 32),
}

_CARD_SHAPE = re.compile(r"\d(?:[ -]?\d){11,18}")
_CARD_IN_TEXT = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")  # standalone: not glued to letters
# Issuer prefixes and the lengths each issues (ISO/IEC 7812 ranges as the networks publish them): a 15-digit
# number is a card only as Amex (34, 37), which keeps Luhn-checked IMEIs (15 digits, 35…, 86…) out.
_CARD_ISSUERS: tuple[tuple[re.Pattern[str], frozenset[int]], ...] = (
    (re.compile(r"4"), frozenset({13, 16, 19})),  # Visa
    (re.compile(r"5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)"), frozenset({16})),  # Mastercard
    (re.compile(r"3[47]"), frozenset({15})),  # American Express
    (re.compile(r"30[0-5]|3[689]"), frozenset({14, 16, 17, 18, 19})),  # Diners Club
    (re.compile(r"35(?:2[89]|[3-8]\d)"), frozenset({16, 17, 18, 19})),  # JCB
    (re.compile(r"6(?:011|4[4-9]|5|2)"), frozenset({16, 17, 18, 19})),  # Discover, UnionPay
    (re.compile(r"5[06-8]|6\d"), frozenset(range(12, 20))),  # Maestro
)

_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")
_IPV6_SHAPE = re.compile(r"[0-9A-Fa-f:.]{2,45}")

_ID_SEPARATORS = re.compile(r"[ .-]")
_ID_SHAPE = re.compile(r"\d[\d .-]{7,14}\d")
_DNI = re.compile(r"([XYZ]|\d)(\d{7})-?([A-Z])")
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

_NAME_WORD = re.compile(r"[A-ZÀ-ÖØ-Þ][A-Za-zÀ-ÖØ-öø-ÿ'\u2019]*\.?")  # \u2019: the typographic apostrophe
_LOWER = re.compile(r"[a-zß-öø-ÿ]")
_NAME_PARTICLES = frozenset(
    {"van", "de", "der", "den", "het", "ter", "ten", "von", "zu", "du", "da", "di", "del", "della", "dos", "das"}
    | {"la", "le", "el", "al", "bin", "ibn", "mac", "'t"}
)
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[ T].*)?")
_EU_DATE = re.compile(r"(\d{2})[-/.](\d{2})[-/.](\d{4})")


def is_email(value: str) -> bool:
    """An address with a dotted local part, a DNS domain and an alphabetic top-level domain."""
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        return False
    return len(value.rpartition("@")[0]) <= 64


def is_phone(value: str) -> bool:
    """E.164 (``+`` or ``00`` then 8 to 15 digits), a national number with a trunk ``0``, or a North American form.

    Plain digit strings must start with the trunk prefix (``0612345678``), so ids and amounts are not phones.
    """
    if not _PHONE_SHAPE.fullmatch(value) or _DECIMAL.fullmatch(value):
        return False
    digits = _NON_DIGITS.sub("", value)
    if value.startswith("+"):
        return 8 <= len(digits) <= 15 and digits[0] != "0"
    if digits.startswith("00"):
        return 10 <= len(digits) <= 17 and digits[2] != "0"
    if digits.startswith("0"):
        return 9 <= len(digits) <= 11 and digits[1] != "0"
    return _NANP.fullmatch(value) is not None


def is_iban(value: str) -> bool:
    """An IBAN (spaces allowed, any case) of its country's length whose mod-97 check gives 1."""
    compact = value.replace(" ", "").upper()
    if not _IBAN_SHAPE.fullmatch(compact) or _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    return _mod97(compact[4:] + compact[:4]) == 1


def _mod97(text: str) -> int:
    return int("".join(str(int(ch, 36)) for ch in text)) % 97


def is_card(value: str) -> bool:
    """12 to 19 digits (single spaces or dashes between them allowed), an issuer's prefix with a length it issues,
    and a valid Luhn sum."""
    if not _CARD_SHAPE.fullmatch(value):
        return False
    digits = _NON_DIGITS.sub("", value)
    issued = any(prefix.match(digits) and len(digits) in lengths for prefix, lengths in _CARD_ISSUERS)
    return issued and luhn(digits)


def luhn(digits: str) -> bool:
    """The Luhn (mod 10) check used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_ip(value: str) -> bool:
    """A dotted-quad IPv4 address or an IPv6 address."""
    if _IPV4.fullmatch(value):
        return True
    if value.count(":") < 2 or not _IPV6_SHAPE.fullmatch(value):
        return False
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return True


def is_national_id(value: str) -> bool:
    """A national id whose checksum holds: Dutch BSN (11-proof), Belgian national number (mod 97), Spanish DNI/NIE."""
    if value[:1].isdigit() and _ID_SHAPE.fullmatch(value):
        digits = _ID_SEPARATORS.sub("", value)
        if not digits.isdigit():
            return False
        if len(digits) == 9:
            return bsn_valid(digits)
        if len(digits) == 11:
            return belgian_nn_valid(digits)
        return False
    found = _DNI.fullmatch(value.upper()) if len(value) <= 10 else None
    if found is None:
        return False
    lead = str("XYZ".index(found[1])) if found[1] in "XYZ" else found[1]
    return _DNI_LETTERS[int(lead + found[2]) % 23] == found[3]


def bsn_valid(digits: str) -> bool:
    """The Dutch citizen service number's 11-proof: 9·d1 + 8·d2 + … + 2·d8 - d9 is a multiple of 11 (and not 0)."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - int(digits[8])
    return total != 0 and total % 11 == 0


def belgian_nn_valid(digits: str) -> bool:
    """The Belgian national number YYMMDD-SSS-CC: a plausible month and day, and CC = 97 - (YYMMDDSSS mod 97).

    People born from 2000 on have a ``2`` put before the nine digits; bis numbers add 20 or 40 to the month.
    """
    if len(digits) != 11 or not digits.isdigit():
        return False
    month, day = int(digits[2:4]) % 20, int(digits[4:6])
    if month > 12 or day > 31:
        return False
    base, check = int(digits[:9]), int(digits[9:])
    return check in (97 - base % 97, 97 - int("2" + digits[:9]) % 97)


def classify(value: str) -> str | None:
    """The pattern kind the whole (stripped) value is, most specific first; None when it is none of them."""
    value = value.strip()
    if len(value) < 6 or len(value) > 254:
        return None
    if "@" in value:
        return EMAIL if is_email(value) else None
    first = value[0]
    if first.isalpha():
        if is_iban(value):
            return IBAN
        return NATIONAL_ID if is_national_id(value) else None
    if ":" in value:
        return IP if is_ip(value) else None
    if is_card(value):
        return CARD
    if is_ip(value):
        return IP
    if is_national_id(value):
        return NATIONAL_ID
    return PHONE if is_phone(value) else None


def find_in_text(text: str) -> Iterator[tuple[str, str]]:
    """``(kind, match)`` for each validated email, IBAN, card or international phone number inside ``text``."""
    if "@" in text:
        for m in _EMAIL_IN_TEXT.finditer(text):
            if is_email(m.group()):
                yield EMAIL, m.group()
    if not any(ch.isdigit() for ch in text):
        return
    ibans: list[tuple[int, int]] = []
    for m in _IBAN_START.finditer(text):
        found = _iban_at(text, m.start(), _IBAN_LENGTHS.get(m[1], 0))
        if found:
            ibans.append((m.start(), m.start() + len(found)))
            yield IBAN, found
    for m in _CARD_IN_TEXT.finditer(text):
        # The digit groups of an IBAN written with spaces can pass for a card number: they are the IBAN's.
        if is_card(m.group()) and not any(start <= m.start() < end for start, end in ibans):
            yield CARD, m.group()
    if "+" in text:
        for m in _PHONE_IN_TEXT.finditer(text):
            if is_phone(m.group()):
                yield PHONE, m.group()


def _iban_at(text: str, start: int, length: int) -> str | None:
    """The IBAN of ``length`` characters (single spaces between them allowed) starting at ``start``, if valid."""
    if not length:
        return None
    chars: list[str] = []
    i = start
    while i < len(text) and len(chars) < length:
        ch = text[i]
        if ch.isascii() and (ch.isdigit() or ch.isupper()):
            chars.append(ch)
        elif ch != " " or (i + 1 < len(text) and text[i + 1] == " "):
            break
        i += 1
    if len(chars) != length or (i < len(text) and text[i].isalnum()):
        return None
    candidate = "".join(chars)
    return text[start:i] if is_iban(candidate) else None


def looks_like_person_name(value: str) -> bool:
    """One to five capitalised words, lower-case particles (``van``, ``de``, …) allowed: ``Anna van der Berg``."""
    words = value.strip().split()
    if not 1 <= len(words) <= 5:
        return False
    capitalised = 0
    for word in words:
        for part in word.split("-"):
            # A capital, then letters with at least one lower-case one ("McDonald", "O'Neil"), or an initial ("J.").
            if _NAME_WORD.fullmatch(part) and (len(part) <= 2 or _LOWER.search(part)):
                capitalised += 1
            elif part.lower() not in _NAME_PARTICLES:
                return False
    return capitalised >= 1


def parse_date(value: str) -> tuple[int, int, int] | None:
    """``(year, month, day)`` of an ISO (``1984-03-07``) or day-first (``07-03-1984``) date string, else None."""
    value = value.strip()
    iso = _ISO_DATE.fullmatch(value)
    if iso:
        year, month, day = int(iso[1]), int(iso[2]), int(iso[3])
    else:
        eu = _EU_DATE.fullmatch(value)
        if not eu:
            return None
        day, month, year = int(eu[1]), int(eu[2]), int(eu[3])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return year, month, day


def mask(kind: str, value: str) -> str:
    """The value as evidence a person may see: the shape and a character or two, never the whole of it."""
    value = value.strip()
    if kind == EMAIL and "@" in value:
        local, _, domain = value.rpartition("@")
        host, _, tld = domain.rpartition(".")
        return f"{local[:1]}***@{host[:1]}***.{tld}"
    if kind == IP:
        if "." in value and ":" not in value:
            return value.split(".", 1)[0] + ".*.*.*"
        return value.split(":", 1)[0] + ":*:*"
    if kind == NAME:
        return " ".join(w[:1] + "***" for w in value.split())
    if kind == DOB:
        return value[:2] + "**-**-**" if len(value) >= 4 else "****"
    compact = value.replace(" ", "").replace("-", "").replace(".", "")
    if kind in (PHONE, IBAN):
        head = 3 if kind == PHONE else 2
        return compact[:head] + "*" * max(len(compact) - head - 2, 3) + compact[-2:]
    return "*" * max(len(compact) - 2, 3) + compact[-2:]
