"""A labelled corpus for measuring PII proposals: tables whose columns are known to hold one kind of data.

``build(seed)`` returns the same tables for the same seed. Each column has a label: a PII kind (``email``,
``phone``, ``iban``, ``card``, ``ip``, ``national-id``, ``dob``, ``name``) or None. Columns are named plainly
(``email``), neutrally (``contact``, ``c7``) or misleadingly (``phone_type`` holding categories), and the negatives
are the data that fool naive matchers: 9- and 16-digit ids, order numbers, zip codes, versions, amounts, times,
hashes, uuids, tokens of the configured format, free text with numbers.
"""

from __future__ import annotations

import json
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg
from psycopg import sql

from provisioner.tokenize import TokenFormat, Tokenizer

FIRST = [
    "Anna",
    "Bram",
    "Chloé",
    "Daan",
    "Eva",
    "Finn",
    "Gijs",
    "Hanna",
    "Isa",
    "Jesse",
    "Lotte",
    "Milan",
    "Noor",
    "Olivier",
    "Pieter",
    "Roos",
    "Sanne",
    "Thomas",
    "Vera",
    "Wout",
    "Emma",
    "Liam",
    "Olivia",
    "Noah",
    "Sophie",
    "Lucas",
    "Julia",
    "Louis",
    "Marie",
    "Jean",
    "Pierre",
    "Camille",
    "Léa",
    "Hugo",
    "Manon",
    "Sarah",
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "William",
    "Elizabeth",
    "David",
    "Susan",
    "Ahmed",
    "Fatima",
    "Mohammed",
    "Aisha",
    "Yusuf",
    "Zeynep",
]
LAST = [
    "Jansen",
    "de",
    "Vries",
    "van",
    "den",
    "Berg",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de",
    "Boer",
    "Mulder",
    "de",
    "Groot",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "Dubois",
    "Martin",
    "Bernard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefebvre",
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "O'Neil",
    "McDonald",
    "Y\u0131lmaz",
    "Kaya",
    "Demir",
    "El",
    "Amrani",
    "Janssens",
    "Maes",
    "Willems",
    "Claes",
]
PARTICLES = ("", "", "", "van", "de", "van der", "van den", "de la")
DOMAINS = ("example.com", "mail.nl", "gmail.com", "outlook.be", "bedrijf.nl", "uni-example.edu", "post.co.uk")
WORDS = [
    "order",
    "shipped",
    "delivered",
    "customer",
    "asked",
    "about",
    "the",
    "invoice",
    "please",
    "check",
    "delivery",
    "status",
    "tomorrow",
    "morning",
    "package",
    "damaged",
    "replacement",
    "sent",
    "refund",
    "approved",
    "call",
    "back",
    "later",
    "contract",
    "renewed",
    "discount",
    "applied",
]
TOKENS = Tokenizer(TokenFormat(), "corpus-key")


def _name(r: random.Random) -> tuple[str, str]:
    return r.choice(FIRST), (r.choice(PARTICLES) + " " + r.choice(LAST)).strip()


def email(r: random.Random) -> str:
    first, last = _name(r)
    local = r.choice(
        [
            f"{first}.{last.replace(' ', '')}",
            f"{first[0]}{last.replace(' ', '')}{r.randrange(100)}",
            f"{first}+news",
            f"{first}_{r.randrange(1000)}",
        ]
    )
    value = f"{local}@{r.choice(DOMAINS)}"
    return value.upper() if r.random() < 0.05 else value.lower() if r.random() < 0.8 else value


def phone(r: random.Random) -> str:
    d = lambda n: "".join(r.choice(string.digits) for _ in range(n))  # noqa: E731
    return r.choice(
        [
            f"+316{d(8)}",
            f"+31 6 {d(8)}",
            f"+32 4{r.randrange(70, 99)} {d(2)} {d(2)} {d(2)}",
            f"+44 7{d(3)} {d(6)}",
            f"+1 ({r.randrange(201, 989)}) {r.randrange(200, 999)}-{d(4)}",
            f"06-{d(8)}",
            f"020 {d(3)} {d(4)}",
            f"0{r.randrange(1, 6)} {d(2)} {d(2)} {d(2)} {d(2)}",
            f"07{d(3)} {d(6)}",
            f"({r.randrange(201, 989)}) {r.randrange(200, 999)}-{d(4)}",
            f"0032 4{r.randrange(70, 99)} {d(6)}",
        ]
    )


def _iban(country: str, bban: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def iban(r: random.Random) -> str:
    d = lambda n: "".join(r.choice(string.digits) for _ in range(n))  # noqa: E731
    letters = lambda n: "".join(r.choice(string.ascii_uppercase) for _ in range(n))  # noqa: E731
    country, bban = r.choice(
        [
            ("NL", letters(4) + d(10)),
            ("DE", d(18)),
            ("BE", d(12)),
            ("FR", d(10) + letters(1) + d(10) + d(2)),
            ("GB", letters(4) + d(14)),
            ("ES", d(20)),
        ]
    )
    value = _iban(country, bban)
    if r.random() < 0.5:
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def _luhn_complete(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        n = int(ch)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return body + str((10 - total % 10) % 10)


def card(r: random.Random) -> str:
    prefix, length = r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    body = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = _luhn_complete(body)
    style = r.random()
    if style < 0.4:
        return number
    sep = " " if style < 0.7 else "-"
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def ip(r: random.Random) -> str:
    if r.random() < 0.75:
        return ".".join(str(r.randrange(1, 255)) for _ in range(4))
    groups = [f"{r.randrange(65536):x}" for _ in range(8)]
    if r.random() < 0.5:
        return ":".join(groups)
    return ":".join(groups[:3]) + "::" + groups[-1]


def bsn(r: random.Random) -> str:
    while True:
        digits = [r.randrange(10) for _ in range(8)]
        total = sum(d * w for d, w in zip(digits, range(9, 1, -1), strict=True))
        last = total % 11
        if last < 10 and digits[0] != 0:
            return "".join(map(str, digits)) + str(last)


def belgian_nn(r: random.Random) -> str:
    born = date(1940, 1, 1) + timedelta(days=r.randrange(365 * 59))
    base = f"{born:%y%m%d}{r.randrange(1, 998):03d}"
    check = 97 - int(base) % 97
    value = f"{base}{check:02d}"
    return f"{value[:2]}.{value[2:4]}.{value[4:6]}-{value[6:9]}.{value[9:]}" if r.random() < 0.5 else value


def birth_date(r: random.Random) -> str:
    return (date(1935, 1, 1) + timedelta(days=r.randrange(365 * 70))).isoformat()


def full_name(r: random.Random) -> str:
    first, last = _name(r)
    return f"{first} {last}"


def first_name(r: random.Random) -> str:
    return r.choice(FIRST)


def last_name(r: random.Random) -> str:
    return _name(r)[1]


def sentence(r: random.Random, n: int = 8) -> str:
    words = [r.choice(WORDS) for _ in range(r.randrange(4, n))]
    if r.random() < 0.4:
        words.insert(r.randrange(len(words)), str(r.randrange(1, 5000)))
    return " ".join(words).capitalize() + "."


def notes_with_emails(r: random.Random) -> str:
    text = sentence(r, 12)
    if r.random() < 0.25:
        text += f" Contact {email(r)} for details."
    return text


def remarks_with_phones(r: random.Random) -> str:
    text = sentence(r, 10)
    if r.random() < 0.3:
        text += f" Call +31 6 {r.randrange(10**7, 10**8)} after five."
    return text


def _digits(r: random.Random, n: int) -> str:
    return str(r.randrange(1, 10)) + "".join(r.choice(string.digits) for _ in range(n - 1))


def _ean13(r: random.Random) -> str:
    body = "87" + "".join(r.choice(string.digits) for _ in range(10))
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _imei(r: random.Random) -> str:
    return _luhn_complete(r.choice(["35", "86", "01"]) + "".join(r.choice(string.digits) for _ in range(12)))


def msisdn(r: random.Random) -> int:
    return int(r.choice(["316", "324", "447", "336", "491"]) + "".join(r.choice(string.digits) for _ in range(8)))


def refund_note(r: random.Random) -> str:
    text = sentence(r, 10)
    if r.random() < 0.2:
        text += f" Refund to {iban(r)} please."
    return text


def display_from(r: random.Random) -> str:
    first, last = _name(r)
    return f"{first} {last} <{email(r)}>"


def payload(r: random.Random) -> str:
    if r.random() < 0.6:
        return json.dumps({"type": "signup", "email": email(r), "step": r.randrange(5)})
    return json.dumps({"type": "view", "page": f"/p/{r.randrange(1000)}"})


def mac(r: random.Random) -> str:
    return ":".join(f"{r.randrange(256):02X}" for _ in range(6))


AGENTS = [f"agent{i}@helpdesk.example.com" for i in range(6)]


@dataclass(frozen=True)
class Column:
    """A generated column: name, SQL type, label (a PII kind or None) and a value generator."""

    name: str
    sql_type: str
    label: str | None
    make: Callable[[random.Random, int], object]
    nulls: float = 0.0


def c(
    name: str, label: str | None, make: Callable[[random.Random], object], sql_type: str = "text", nulls: float = 0.0
) -> Column:
    """A column whose values do not depend on the row number."""
    return Column(name, sql_type, label, lambda r, _i: make(r), nulls)


TABLES: dict[str, list[Column]] = {
    "customers": [
        Column("id", "integer", None, lambda _r, i: i),
        c("email", "email", email, nulls=0.05),
        c("phone", "phone", phone, nulls=0.1),
        c("first_name", "name", first_name),
        c("last_name", "name", last_name),
        c("status", None, lambda r: r.choice(["active", "closed", "pending"])),
        c("country", None, lambda r: r.choice(["NL", "BE", "DE", "FR", "GB"])),
        c("birth_date", "dob", birth_date, "date"),
        c("notes", "email", notes_with_emails, nulls=0.2),
        c("customer_ref", None, lambda r: r.randrange(100_000_000, 999_999_999), "bigint"),
        c("created_at", None, lambda r: f"2024-{r.randrange(1, 13):02d}-{r.randrange(1, 28):02d} 10:00", "timestamptz"),
    ],
    "payments": [
        Column("payment_id", "bigint", None, lambda _r, i: 10_000 + i),
        c("iban", "iban", iban),
        c("card_number", "card", card, nulls=0.3),
        c("amount", None, lambda r: round(r.uniform(1, 5000), 2), "numeric(12,2)"),
        c("amount_text", None, lambda r: f"{r.uniform(1, 5000):.2f}"),
        c("currency", None, lambda r: r.choice(["EUR", "USD", "GBP"])),
        c("order_number", None, lambda r: _digits(r, 16)),
        c("reference", None, lambda r: f"INV/{r.randrange(2019, 2025)}/{r.randrange(1, 99999):05d}"),
        c("acct", "iban", iban),
        c("pan", "card", card),
        c("paid_on", None, lambda r: f"2024-{r.randrange(1, 13):02d}-{r.randrange(1, 28):02d}", "date"),
        # Shaped like the real thing, without its checksum: a loyalty scheme's 16 digits after a 4 (a Visa prefix),
        # and reference codes of a British IBAN's shape and length.
        c("loyalty_number", None, lambda r: "4" + _digits(r, 15)),
        c("contract_ref", None, lambda r: f"GB{r.randrange(10, 99)}REFX{_digits(r, 14)}"),
    ],
    "sessions": [
        Column("session_id", "uuid", None, lambda r, _i: str(uuid.UUID(int=r.getrandbits(128)))),
        c("ip_address", "ip", ip, "inet"),
        c("origin", "ip", ip),
        c("user_agent", None, lambda r: r.choice(["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.4.0", "Safari/605.1"])),
        c("app_version", None, lambda r: f"{r.randrange(1, 5)}.{r.randrange(0, 30)}.{r.randrange(0, 9)}"),
        c("started", None, lambda r: f"{r.randrange(0, 24):02d}:{r.randrange(0, 60):02d}:00"),
        c("checksum", None, lambda r: f"{r.getrandbits(128):032x}"),
        c("login", "email", email),
        c("duration_s", None, lambda r: r.randrange(1, 100_000), "integer"),
        c("ip_country", None, lambda r: r.choice(["NL", "BE", "US"])),
    ],
    "contacts": [
        Column("contact_id", "integer", None, lambda _r, i: i),
        c("full_name", "name", full_name),
        c("contact", "email", email),
        c("c7", "phone", phone),
        c("mobile", "phone", phone),
        c("phone_type", None, lambda r: r.choice(["mobile", "home", "work"])),
        c("remarks", "phone", remarks_with_phones),
        c("zip", None, lambda r: f"{r.randrange(1000, 9999)} {r.choice(string.ascii_uppercase)}{r.choice('ABCDEF')}"),
        c("house_number", None, lambda r: str(r.randrange(1, 300))),
        c("company", None, lambda r: r.choice(["Acme BV", "Globex NV", "Initech", "Umbrella Corp", "Hooli"])),
        c("email_token", None, lambda r: TOKENS.token(email(r))),
        c("description", None, lambda r: sentence(r, 14)),
    ],
    "citizens": [
        Column("citizen_id", "integer", None, lambda _r, i: i),
        c("bsn", "national-id", bsn),
        c("rijksregisternummer", "national-id", belgian_nn),
        c("dob", "dob", birth_date),
        c("name", "name", full_name),
        c("municipality", None, lambda r: r.choice(["Amsterdam", "Utrecht", "Gent", "Antwerpen", "Rotterdam"])),
        c("household_size", None, lambda r: r.randrange(1, 8), "smallint"),
        c("registered", None, lambda r: f"20{r.randrange(10, 25)}-0{r.randrange(1, 10)}-1{r.randrange(0, 10)}", "date"),
        c("sku", None, lambda r: f"SKU-{r.randrange(10000, 99999)}-{r.choice('ABCDEFGH')}{r.randrange(10)}"),
        c("account_code", None, lambda r: _digits(r, 9)),
        c("geboortedatum", "dob", lambda r: date.fromisoformat(birth_date(r)).strftime("%d-%m-%Y")),
    ],
    "crm_events": [
        Column("event_id", "bigint", None, lambda _r, i: i),
        c("payload", "email", payload, "jsonb"),
        c("refund_note", "iban", refund_note),
        c("display_from", "email", display_from),
        c("msisdn", "phone", msisdn, "bigint"),
        c("imei", None, _imei),
        c("ean", None, _ean13),
        c("vat_number", None, lambda r: f"NL{_digits(r, 9)}B{r.randrange(1, 99):02d}"),
        c("mac_address", None, mac),
        # Zero-padded account numbers: bare digits with a leading 0, exactly like national phone numbers.
        c("legacy_account", None, lambda r: "0" + _digits(r, 9)),
        c("lat_long", None, lambda r: f"{r.uniform(50, 54):.4f}, {r.uniform(3, 7):.4f}"),
        c("secondary_email", "email", email, nulls=0.85),
        c("ipv6", "ip", lambda r: ":".join(f"{r.randrange(65536):x}" for _ in range(8))),
        c("card_digits", "card", lambda r: int(_luhn_complete("4" + _digits(r, 14))), "bigint"),
    ],
    "support_tickets": [
        Column("ticket_id", "integer", None, lambda _r, i: i),
        c("subject", None, lambda r: sentence(r, 6)),
        c("body", "email", notes_with_emails),
        c("agent_email", "email", lambda r: r.choice(AGENTS)),
        # A role mailbox, the same in every row: an address, but nobody's personal data.
        c("reply_to", None, lambda _r: "support@helpdesk.example.com"),
        c("priority", None, lambda r: r.choice(["low", "normal", "high", "urgent"])),
        c("opened", None, lambda r: f"2025-0{r.randrange(1, 10)}-1{r.randrange(0, 10)} 09:30:00+01", "timestamptz"),
        c("channel", None, lambda r: r.choice(["email", "phone", "chat"])),
        c("time_spent", None, lambda r: f"{r.randrange(0, 8)}:{r.randrange(0, 60):02d}"),
    ],
}
PATTERN_KINDS = ("email", "phone", "iban", "card", "ip")


def build(url: str, seed: int = 19, rows: int = 1200, schema: str = "corpus") -> dict[tuple[str, str], str | None]:
    """Create the corpus tables in ``schema``; return the labels, ``(table, column) → kind or None``."""
    r = random.Random(seed)
    labels: dict[tuple[str, str], str | None] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for table, columns in TABLES.items():
            target = sql.Identifier(schema, table)
            definition = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(col.name), sql.SQL(col.sql_type)) for col in columns
            )
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(target, definition))
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                target, sql.SQL(", ").join(sql.Identifier(col.name) for col in columns)
            )
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for i in range(rows):
                    copy.write_row(
                        [None if col.nulls and r.random() < col.nulls else col.make(r, i) for col in columns]
                    )
            for col in columns:
                labels[table, col.name] = col.label
    return labels
