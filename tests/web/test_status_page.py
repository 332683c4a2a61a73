"""The status page, ``GET /`` (issue 15 item 9): server-rendered, read only, escaped, guarded like the status API.

The browser tests run Debian's chromium headless against a real `provisioner serve` and read the DOM it rendered.
They skip only when chromium is not installed (CI installs it: .ci/run and the Makefile's install step).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from provisioner.cli import main
from provisioner.events import ReconcileProduct
from provisioner.jobs import enqueue
from provisioner.persistence import grants, parked, products, runs
from provisioner.persistence.records import GrantRecord, Parked, ProductRecord
from provisioner.scaffold import read_env
from tests.cli.test_serve import Server, _provisioning_env
from tests.fixtures.s3 import S3Server
from tests.web.conftest import WebFactory

STATUS_TOKEN = "status-page-token-0123456789"
EVIL = "<script>document.title='pwned'</script>"
CHROMIUM = shutil.which("chromium")


def _seed(url: str) -> None:
    """A provisioned product with a hostile name, a grant, a parked product, a run and a queued job."""
    with psycopg.connect(url, autocommit=True) as conn:
        products.save_product(
            conn, ProductRecord("p1", "sales", f"Sales {EVIL}", "provisioned", "AKIDSALES1", True, None)
        )
        products.save_product(
            conn, ProductRecord("c1", "marketing", "Marketing", "provisioned", "AKIDMKT2", True, None)
        )
        grants.upsert_grants(conn, "c1", [GrantRecord("c1", "op1", "p1", "sales", "orders", None, 'untokenized "ok"')])
        parked.park(conn, Parked("p9", "broken", "fp", "invalid_name", f"name {EVIL} is refused"))
        run = runs.start_run(conn, "product", "p1", "sales")
        runs.finish_run(conn, run, "failure", f"boom {EVIL}")
        enqueue(conn, [ReconcileProduct("p1")])


async def test_the_page_shows_every_section_escaped(make_web: WebFactory) -> None:
    web = await make_web()
    _seed(web.url)

    response = await web.client.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]  # default-src 'none': no script at all
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    page = response.text
    assert "<script" not in page  # not one, not even the product's own name
    assert "Sales &lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    assert "boom &lt;script&gt;" in page and "name &lt;script&gt;" in page
    assert "untokenized &quot;ok&quot;" in page
    for shown in ("AKIDSALES1", "AKIDMKT2", "sales/published/orders/", "invalid_name", "todo"):
        assert shown in page
    # The job waiting in the queue, with the entity it is about.
    assert '<table id="jobs-table">' in page and "<code>product:p1</code>" in page


async def test_the_page_is_guarded_like_the_status_api(make_web: WebFactory) -> None:
    web = await make_web(status_token=STATUS_TOKEN)

    assert (await web.client.get("/")).status_code == 401
    assert (await web.client.get("/", headers={"Authorization": "Bearer wrong"})).status_code == 401
    opened = await web.client.get("/", headers={"Authorization": f"Bearer {STATUS_TOKEN}"})
    assert opened.status_code == 200 and "no product provisioned yet" in opened.text


def dump_dom(url: str) -> str:
    """The DOM chromium rendered for ``url`` (headless, its own throwaway profile)."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="provisioner-chromium-") as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # the suite may run as root, where chromium's sandbox refuses to start
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; CI installs it)")
def test_a_browser_shows_a_provisioned_product_and_its_grant(
    pg_url: str,
    portal: Any,
    moto_server: S3Server,
    unique_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _provisioning_env(pg_url, portal, moto_server, unique_name, tmp_path, PROVISIONER_RESYNC_SECONDS="0")
    for name, value in env.items():
        if name.startswith("PROVISIONER_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PROVISIONER_TOKENIZE_REQUIRE_POLICY", "false")  # no policy file: grant untokenized
    producer = portal.state.create_product(f"Producer {EVIL}", f"{unique_name}-p", notify=False)
    consumer = portal.state.create_product("Consumer", f"{unique_name}-c", notify=False)
    port = portal.state.create_output_port(producer.id, "Orders", namespace="orders", notify=False)
    portal.state.request_access(consumer.id, port.id, notify=False)
    portal.state.approve(port.id, consumer.id, notify=False)
    assert main(["resync"]) == 0  # provisions both, then grants the consumer the producer's output port
    env_file = read_env(tmp_path / "products" / f"{unique_name}-c" / ".env")

    server = Server(env)
    try:
        dom = dump_dom(f"{server.base}/")
    finally:
        server.stop()

    assert "<title>provisioner status</title>" in dom  # rendered, and no script changed the title
    assert f"<code>{unique_name}-c</code>" in dom and f"<code>{unique_name}-p</code>" in dom
    assert env_file["S3_ACCESS_KEY"] in dom and env_file["S3_SECRET_KEY"] not in dom
    assert f"<code>{unique_name}-p/published/orders/</code>" in dom  # the grant
    assert "provisioned" in dom
    # The hostile name is text in the DOM, not an element.
    assert "Producer &lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert EVIL not in dom
