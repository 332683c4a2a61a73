"""The portal's data is checked once, where it is parsed (issue 12, item 1): names and namespaces that cannot be
provisioned are marked with the reason, never silently dropped, so they can still be cleaned up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.names import Namespace
from provisioner.portal import PortalClient, parse_output_port, parse_product

SAMPLES = Path(__file__).parent / "data" / "contract-samples" / "portal-namespaces.json"


def _product(**fields: object) -> dict[str, object]:
    return {"id": "p1", "name": "Sales", "namespace": "sales", "status": "pending", **fields}


def _port(**fields: object) -> dict[str, object]:
    return {
        "id": "o1",
        "name": "Orders",
        "namespace": "orders",
        "data_product_id": "p1",
        "access_type": "restricted",
        "status": "active",
        **fields,
    }


def test_every_sample_namespace_parses_clean() -> None:
    data = json.loads(SAMPLES.read_text())
    for item in data["data_products"]:
        product = parse_product(_product(name=item["name"], namespace=item["namespace"]))
        assert product.problem is None and isinstance(product.namespace, Namespace)
    for item in data["output_ports"]:
        port = parse_output_port(_port(name=item["name"], namespace=item["namespace"]))
        assert port.problem is None and isinstance(port.namespace, Namespace)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"name": "Sa\x00les"}, "control character '\\x00'"),
        ({"name": "Sales\x1b[31m"}, "control character '\\x1b'"),
        ({"namespace": "sa\x00les"}, "not one the portal accepts"),
        ({"namespace": "../etc"}, "not one the portal accepts"),
        ({"namespace": "Sales"}, "not one the portal accepts"),
        ({"namespace": "x" * 65}, "not one the portal accepts"),
        ({"namespace": "sales\n"}, "not one the portal accepts"),
        ({"description": "a\x00b"}, "NUL"),
    ],
)
def test_an_unusable_product_is_marked_with_the_reason(fields: dict[str, object], reason: str) -> None:
    product = parse_product(_product(**fields))
    assert product.problem is not None and reason in product.problem
    assert product.id == "p1"  # still known, so a deletion can still be finished
    for text in (product.name, product.namespace, product.description):  # nothing unsafe leaves the parser
        assert "\x00" not in text and "\x1b" not in text


@pytest.mark.parametrize(
    ("fields", "reason"),
    [({"namespace": "or\x00ders"}, "not one the portal accepts"), ({"name": "Or\x00ders"}, "control character")],
)
def test_an_unusable_output_port_is_marked_with_the_reason(fields: dict[str, object], reason: str) -> None:
    port = parse_output_port(_port(**fields))
    assert port.problem is not None and reason in port.problem
    assert "\x00" not in port.name + port.namespace


def test_one_bad_product_does_not_hide_the_others_from_a_resync(portal) -> None:  # type: ignore[no-untyped-def]
    good = portal.state.create_product("Good", "customer_segmentation", notify=False)
    bad = portal.state.create_product("Bad\x00", "bad", notify=False)
    with PortalClient(portal.url, backoff=0.01) as client:
        listed = {p.id: p for p in client.list_products()}
        assert listed[good.id].problem is None
        assert "control character" in (listed[bad.id].problem or "")
        assert client.get_product(bad.id).problem == listed[bad.id].problem  # type: ignore[union-attr]
