"""The portal stand-in enforces the portal's namespace rule and serves the portal's own sample namespaces."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from provisioner.portal import PortalClient
from provisioner.testing.portal import API, PortalState, namespace_validity

SAMPLES = json.loads((Path(__file__).parent / "data" / "contract-samples" / "portal-namespaces.json").read_text())


def test_the_stand_in_serves_every_sample_namespace(portal) -> None:  # type: ignore[no-untyped-def]
    products, ports = portal.state.load_samples(SAMPLES)
    assert (len(products), len(ports)) == (40, 38)
    with PortalClient(portal.url) as client:
        listed = client.list_products()
        served_ports = [client.output_port(p.data_product_id, p.id) for p in ports]
    assert sorted(p.namespace for p in listed) == sorted(
        p["namespace"] for p in SAMPLES["data_products"] if p["type"] == "data_products"
    )
    assert sorted(p.namespace for p in served_ports if p) == sorted(p["namespace"] for p in SAMPLES["output_ports"])
    assert all(p.problem is None for p in listed) and all(p and p.problem is None for p in served_ports)
    by_id = {p.id: p for p in products}
    assert by_id[ports[0].data_product_id].namespace == "customer_segmentation"  # customer_segments_weekly


@pytest.mark.parametrize(
    ("namespace", "validity"),
    [
        ("Sales", "INVALID_CHARACTERS"),
        ("a/b", "INVALID_CHARACTERS"),
        ("a\x00b", "INVALID_CHARACTERS"),
        ("", "INVALID_CHARACTERS"),
        ("x" * 65, "INVALID_LENGTH"),
    ],
)
def test_the_api_refuses_what_the_portal_refuses(portal, namespace: str, validity: str) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=portal.url) as http:
        if namespace:
            created = http.post(API, json={"name": "X", "namespace": namespace})
            assert created.status_code == 400 and created.json()["detail"] == f"Invalid namespace: {validity}"
        ok = http.post(API, json={"name": "Sales", "namespace": "sales.eu@x"})
        assert ok.status_code == 200
        pid = ok.json()["id"]
        if namespace:
            moved = http.put(f"{API}/{pid}", json={"name": "Sales", "namespace": namespace, "description": ""})
            assert moved.status_code == 400 and moved.json()["detail"] == f"Invalid namespace: {validity}"
            port = http.post(f"{API}/{pid}/output_ports", json={"name": "Orders", "namespace": namespace})
            assert port.status_code == 400
    assert portal.state.product(pid).namespace == "sales.eu@x"


def test_the_api_refuses_a_taken_namespace_and_applies_a_valid_change(portal) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=portal.url) as http:
        first = http.post(API, json={"name": "A", "namespace": "customer_segmentation"}).json()["id"]
        twin = http.post(API, json={"name": "B", "namespace": "customer_segmentation"})
        assert twin.status_code == 400 and twin.json()["detail"] == "Invalid namespace: DUPLICATE"
        renamed = http.put(f"{API}/{first}", json={"name": "A", "namespace": "customer_segmentation_v2"})
        assert renamed.status_code == 200
    assert portal.state.product(first).namespace == "customer_segmentation_v2"


def test_helpers_refuse_too_unless_told_to_stand_in_for_a_lax_portal() -> None:
    state = PortalState()
    with pytest.raises(ValueError, match="INVALID_CHARACTERS"):
        state.create_product("Bad", "Not A Slug", notify=False)
    product = state.create_product("Bad", "Not A Slug", notify=False, check_namespace=False)
    with pytest.raises(ValueError, match="INVALID_LENGTH"):
        state.create_output_port(product.id, "P", namespace="p" * 65, notify=False)
    assert state.create_product("Customer Segmentation", notify=False).namespace == "customer-segmentation"
    assert state.create_product("A_B Test Results!", notify=False).namespace == "a_b-test-results"


def test_the_portals_trailing_newline_quirk_is_refused_where_we_parse(portal) -> None:  # type: ignore[no-untyped-def]
    assert namespace_validity("sales\n") == "VALID"  # the portal's re.match + "$" lets it through
    product = portal.state.create_product("Sales", "sales\n", notify=False)
    with PortalClient(portal.url) as client:
        parsed = client.get_product(product.id)
    assert parsed is not None and parsed.problem and "not one the portal accepts" in parsed.problem
