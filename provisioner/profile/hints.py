"""What a column's name suggests it holds: one piece of a proposal's evidence, never enough on its own.

Names are split into words on ``_``, ``-``, spaces and camelCase humps, so ``customerEmail``, ``email_address``
and ``E-Mail`` all suggest an email. Dates of birth and person names are recognised by name first (a date or a
capitalised word says little by itself); the pattern kinds only get a bonus from their name.
"""

from __future__ import annotations

import itertools
import re

from provisioner.profile import patterns as p

_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# Whole words (or adjacent word pairs, joined by "_") that suggest a kind.
_KIND_WORDS: dict[str, frozenset[str]] = {
    p.EMAIL: frozenset({"email", "mail", "e_mail", "emailaddress", "mailaddress", "courriel"}),
    p.PHONE: frozenset(
        {"phone", "telephone", "tel", "mobile", "mob", "gsm", "cell", "cellphone", "fax", "msisdn", "telefoon"}
        | {"telefon", "telefono", "telephone_number", "phonenumber", "handy"}
    ),
    p.IBAN: frozenset({"iban", "bank_account", "account_number", "rekening", "rekeningnummer", "bankrekening"}),
    p.CARD: frozenset({"card", "pan", "cc", "creditcard", "credit_card", "card_number", "cardnumber", "kaart"}),
    p.IP: frozenset({"ip", "ipv4", "ipv6", "ip_address", "ipaddress", "remote_addr", "client_ip", "ipaddr"}),
    p.NATIONAL_ID: frozenset(
        {"bsn", "ssn", "national_id", "nin", "rijksregisternummer", "rijksregister", "insz", "nie", "dni"}
        | {"nif", "passport", "tax_id", "sofinummer", "burgerservicenummer", "nationalid", "personal_id"}
    ),
    p.DOB: frozenset(
        {"dob", "birth", "birthday", "birthdate", "date_of_birth", "born", "geboortedatum", "geburtsdatum"}
        | {"naissance", "date_naissance", "birth_date"}
    ),
    p.NAME: frozenset(
        {"name", "full_name", "fullname", "first_name", "firstname", "last_name", "lastname", "surname"}
        | {"given_name", "givenname", "family_name", "familyname", "middle_name", "maiden_name", "contact_name"}
        | {"customer_name", "person_name", "voornaam", "achternaam", "naam", "vorname", "nachname", "prenom"}
        | {"nom", "nombre", "apellido", "forename", "initials", "tussenvoegsel"}
    ),
}
# Words that make a "name" column something other than a person's name.
_NOT_PERSON = frozenset(
    {"file", "product", "company", "table", "schema", "column", "host", "domain", "user", "app", "brand", "city"}
    | {"street", "country", "event", "item", "category", "bucket", "key", "project", "org", "organisation"}
    | {"organization", "business", "account", "display", "shop", "store", "team", "group", "role", "type"}
)


def words(column: str) -> list[str]:
    """The lower-case words of a column name: ``customerEmail_2`` → ``['customer', 'email', '2']``."""
    return [w.lower() for w in _WORDS.findall(column)]


def name_suggests(column: str) -> str | None:
    """The kind the column's name suggests, or None. The most specific kind wins (``email_name`` is an email)."""
    ws = words(column)
    candidates = set(ws) | {a + "_" + b for a, b in itertools.pairwise(ws)} | {"".join(ws)}
    for kind in (p.EMAIL, p.IBAN, p.CARD, p.IP, p.NATIONAL_ID, p.PHONE, p.DOB):
        if candidates & _KIND_WORDS[kind]:
            return kind
    if candidates & _KIND_WORDS[p.NAME] and not set(ws) & _NOT_PERSON:
        return p.NAME
    return None
