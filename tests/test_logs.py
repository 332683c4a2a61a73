import io
import json
import logging

from provisioner.logs import JsonFormatter, log_event, redact, redact_text


def test_event_lines_are_json_with_secrets_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_event(
            logger,
            "product.provisioned",
            product_id="p1",
            access_key_id="AKIA123",
            secret_key="very-secret",
            dsn="postgresql://bob:hunter2@db:5432/x",
        )
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["event"] == "product.provisioned"
    assert line["product_id"] == "p1"
    assert line["access_key_id"] == "AKIA123"
    assert line["secret_key"] == "****"
    assert line["dsn"] == "postgresql://bob:****@db:5432/x"
    assert "hunter2" not in stream.getvalue() and "very-secret" not in stream.getvalue()


def test_redact_nested_and_keyword_pairs() -> None:
    assert redact({"a": {"password": "x"}, "b": ["host=h password=p user=u"]}) == {
        "a": {"password": "****"},
        "b": ["host=h password=**** user=u"],
    }
    assert redact_text("no secrets here") == "no secrets here"


def test_redact_text_leaves_prose_alone_and_masks_only_real_values() -> None:
    # The intake's own help text: "?token=" followed by prose is not a value (it used to become "?token= ****").
    prose = "expected a Sign header (v1), a ?token= in the URL (v2, see `provisioner webhook-url`)"
    assert redact_text(prose) == prose
    assert redact_text("POST /webhooks/portal/v2?token=abc.def-ghi&x=1") == "POST /webhooks/portal/v2?token=****&x=1"
    assert redact_text("token=&x=1") == "token=&x=1"  # an empty value has nothing to mask


def test_redact_text_masks_only_the_value_after_a_secret_name_up_to_its_delimiter() -> None:
    # "password= in the URL" used to become "password= **** the URL": a space after "=" ends an empty value unless
    # the "=" has spaces on both sides, as libpq writes it ("password = hunter2").
    for prose in ("set password= in the URL", "a ?token= in the URL", "the secret= here", "sslpassword=\tnext"):
        assert redact_text(prose) == prose
    assert redact_text("?token=abc&next=1 and more") == "?token=****&next=1 and more"
    assert redact_text("u?password=pw1&user=bob") == "u?password=****&user=bob"
    assert redact_text("password=hunter2 in the URL") == "password=**** in the URL"
    assert redact_text("host=db password = hunter2 user=u") == "host=db password = **** user=u"


def test_redact_text_masks_dsns_keys_and_bearer_tokens() -> None:
    cases = {
        "host=db password = hunter2 user=u": "host=db password = **** user=u",
        "host=db password='a b c' user=u": "host=db password=**** user=u",
        "sslpassword=hunter2": "sslpassword=****",
        "PROVISIONER_TOKENIZE_KEY=k3y-material": "PROVISIONER_TOKENIZE_KEY=****",
        "api_key=abc123 and secret_key=xyz": "api_key=**** and secret_key=****",
        "Authorization: Bearer abc.def.ghi": "Authorization: Bearer ****",
        "x-key: portal-api-key-1": "x-key: ****",
        "sent with bearer s3cr3t-tok": "sent with bearer ****",
        "key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw= rejected": "key whsec_**** rejected",
        "'host=db password=hunter2' is invalid": "'host=db password=****' is invalid",
        "postgresql://bob:hunter2@db/x?sslpassword=pw2": "postgresql://bob:****@db/x?sslpassword=****",
        'portal said {"detail": "bad", "api_key": "k-123"}': 'portal said {"detail": "bad", "api_key": "****"}',
    }
    for given, expected in cases.items():
        assert redact_text(given) == expected, given
    # Names that merely contain a secret-looking word are not secrets.
    for public in ("tokenize_mode=hmac", "token_max_age=0", "access_key_id=AKIA123", "Key (id)=(7) exists"):
        assert redact_text(public) == public
