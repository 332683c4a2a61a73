"""Token formats and the Python reference: determinism, the guard, base64 round trips, configuration errors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains

from provisioner.tokenize import TokenFormat, TokenizeConfigError, Tokenizer, detokenize

KEY = "test-key-0123456789"
HMAC = Tokenizer(TokenFormat(), KEY)
B64 = Tokenizer(TokenFormat(mode="base64"))

# Realistic PII-shaped values: the corpora the guard must never mistake for tokens.
emails = st.builds(
    lambda user, domain: f"{user}@{domain}", st.from_regex(r"[a-z0-9._%+-]{1,30}", fullmatch=True), domains()
)
phones = st.from_regex(r"\+?[0-9 ()-]{6,20}", fullmatch=True)
names = st.text(alphabet=st.characters(categories=("L", "Zs")), min_size=1, max_size=60)
real_data = st.one_of(emails, phones, names, st.text(min_size=1), st.binary(max_size=40).map(lambda b: b.hex()))


def test_hmac_token_matches_an_independent_computation() -> None:
    digest = hmac.new(KEY.encode(), b"alice@example.com", hashlib.sha256).digest()
    expected = "tok_" + base64.urlsafe_b64encode(digest).decode()[:22] + "_poc"
    assert HMAC.token("alice@example.com") == expected
    assert len(expected) == TokenFormat().token_length == 30


def test_keys_longer_than_a_block_follow_rfc_2104() -> None:
    long_key = "k" * 100
    digest = hmac.new(long_key.encode(), b"v", hashlib.sha256).digest()
    assert Tokenizer(TokenFormat(length=43), long_key).token("v") == (
        "tok_" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "_poc"
    )


def test_base64_mode_reproduces_the_proof_of_concept_and_reverses() -> None:
    assert B64.token("alice@example.com") == "tok_" + base64.b64encode(b"alice@example.com").decode() + "_poc"
    assert detokenize(B64.token("héllo ✓")) == "héllo ✓"


def test_hmac_tokens_cannot_be_reversed() -> None:
    with pytest.raises(TokenizeConfigError, match="one-way"):
        HMAC.detokenize(HMAC.token("x"))


def test_missing_key_is_a_clear_configuration_error() -> None:
    with pytest.raises(TokenizeConfigError, match="PROVISIONER_TOKENIZE_KEY is not set"):
        Tokenizer(TokenFormat(), None)
    with pytest.raises(TokenizeConfigError, match="MY_KEY is not set"):
        Tokenizer(TokenFormat(), "", key_env="MY_KEY")


def test_key_never_shows_in_repr() -> None:
    assert KEY not in repr(HMAC)
    assert KEY.encode().hex() not in repr(HMAC.pads)


@pytest.mark.parametrize(
    "kwargs",
    [{"prefix": ""}, {"prefix": "tok "}, {"suffix": "a\\b"}, {"length": 21}, {"length": 44}, {"mode": "rot13"}],
)
def test_invalid_formats_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(TokenizeConfigError):
        TokenFormat(**kwargs)  # type: ignore[arg-type]


def test_prefix_and_suffix_are_configurable() -> None:
    tk = Tokenizer(TokenFormat(prefix="PII:", suffix="", length=30), KEY)
    token = tk.token("bob")
    assert token.startswith("PII:") and len(token) == 34
    assert tk.is_token(token) and not HMAC.is_token(token)


def test_null_and_empty_string_stay_as_they_are() -> None:
    for tk in (HMAC, B64):
        assert tk.tokenize(None) is None
        assert tk.tokenize("") == ""


@settings(max_examples=300)
@given(st.text())
def test_tokens_are_deterministic_and_never_tokenized_twice(value: str) -> None:
    for tk in (HMAC, B64):
        once = tk.tokenize(value)
        assert once == tk.tokenize(value)
        assert tk.tokenize(once) == once
        if value and not tk.is_token(value):
            assert tk.is_token(once)


@settings(max_examples=300)
@given(real_data)
def test_guard_never_matches_real_data(value: str) -> None:
    assert not HMAC.is_token(value)
    assert not B64.is_token(value)


@settings(max_examples=200)
@given(st.text(max_size=40))
def test_guard_rejects_near_tokens(body: str) -> None:
    # Prefix and suffix are not enough: the body must be exactly the token alphabet and length.
    candidate = "tok_" + body + "_poc"
    hmac_like = len(body) == 22 and all(c.isascii() and (c.isalnum() or c in "_-") for c in body)
    assert HMAC.is_token(candidate) == hmac_like
    assert not HMAC.is_token(candidate + "\n")


@settings(max_examples=200)
@given(st.text())
def test_base64_round_trips_any_text(value: str) -> None:
    assert B64.detokenize(B64.token(value)) == value
