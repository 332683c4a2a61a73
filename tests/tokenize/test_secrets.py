"""No key byte reaches the server log, even with every statement logged (its own embedded server)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import psycopg
import pytest

from provisioner import db
from provisioner.tokenize import TokenFormat, TokenizeOptions, Tokenizer, plan, run
from tests.tokenize.conftest import create_people

SECRET = "Sup3r-S3cret-Tokenize-Key-Material!"


@pytest.mark.slow
def test_statement_log_holds_no_key_bytes() -> None:
    # A private server: turning log_statement on must not touch the shared test server. Not under pytest's
    # 0700 tmp dir: the embedded server runs as its own system user and must traverse the path.
    base = Path(tempfile.mkdtemp(prefix="provisioner-test-tokenize-log-"))
    base.chmod(0o755)
    server = db.start_embedded(base / "pg")
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("ALTER SYSTEM SET log_min_duration_statement = 0")
        conn.execute("ALTER SYSTEM SET log_parameter_max_length = -1")
        conn.execute("ALTER SYSTEM SET log_min_error_statement = 'error'")
        conn.execute("SELECT pg_reload_conf()")
    create_people(server.url, [("alice@example.com", "+32 470 11 22 33"), ("bob@example.org", "1")])
    create_people(server.url, [(f"user{i}@example.com", f"+32 {i}") for i in range(600)], table="many")
    options = TokenizeOptions(format=TokenFormat(), key=SECRET, batch_pages=1)
    assert run(plan({"tenant": "t", "table": "people", "columns": ["email", "phone"]}, options), connect=server.url).ok
    # A table larger than a batch: the helper connection loads the key too, and tokens travel as parameters.
    batched = run(plan({"tenant": "t", "table": "many", "columns": ["email", "phone"]}, options), connect=server.url)
    assert batched.ok and batched.tables[0].batches > 1
    failed = run(plan({"tenant": "t", "table": "people", "columns": ["age"]}, options), connect=server.url)
    assert not failed.ok  # an error path, logged with its statement

    log_text = (base / "pg" / "log").read_text(errors="replace")
    # Statements were logged, so the check below means something.
    assert "UPDATE" in log_text and "COPY" in log_text and "SET TRANSACTION SNAPSHOT" in log_text
    pads = Tokenizer(TokenFormat(), SECRET).pads
    needles = {
        "key": SECRET,
        "key hex": SECRET.encode().hex(),
        "key base64": base64.b64encode(SECRET.encode()).decode(),
        "ipad hex": pads.ipad.hex(),
        "opad hex": pads.opad.hex(),
        "ipad hex prefix": pads.ipad.hex()[:16],
        "opad hex prefix": pads.opad.hex()[:16],
    }
    for name, needle in needles.items():
        assert needle.lower() not in log_text.lower(), f"{name} found in the server log"
