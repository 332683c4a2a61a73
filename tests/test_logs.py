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
