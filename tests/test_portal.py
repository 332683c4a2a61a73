"""The portal client against the stand-in over real HTTP, and against exact recorded shapes with respx."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from provisioner.errors import PortalError, PortalUnavailable
from provisioner.portal import InputPort, Named, OutputPort, PortalClient, PortalNotFound, Product
from provisioner.testing.portal import StandinServer

FAST = {"backoff": 0.001, "timeout": 2.0}


def client(portal: StandinServer, **kwargs: object) -> PortalClient:
    return PortalClient(portal.url, **{**FAST, **kwargs})  # type: ignore[arg-type]


def test_get_product_returns_the_typed_product(portal: StandinServer) -> None:
    p = portal.state.create_product(
        "Sales Orders",
        "sales-orders",
        status="active",
        finalizers=["x"],
        tags=["pii"],
        lifecycle="Ready",
        domain="Finance",
        type="Consumer aligned",
    )
    with client(portal) as c:
        product = c.get_product(p.id)
    assert product is not None and product.domain is not None and product.type is not None
    assert (product.domain.name, product.type.name) == ("Finance", "Consumer aligned")
    assert product == Product(
        id=p.id,
        name="Sales Orders",
        namespace="sales-orders",
        status="active",
        finalizers=("x",),
        description="",
        tags=("pii",),
        lifecycle="Ready",
        domain=Named(product.domain.id, "Finance"),
        type=Named(product.type.id, "Consumer aligned"),
    )


def test_unknown_product_is_none_and_its_input_ports_empty(portal: StandinServer) -> None:
    with client(portal) as c:
        assert c.get_product("6a0e2a8e-0000-4000-8000-000000000000") is None
        assert c.input_ports("6a0e2a8e-0000-4000-8000-000000000000") == []
        assert c.output_port_input_ports("nope", "nope") == []


def test_list_products_returns_every_product(portal: StandinServer) -> None:
    ids = set(portal.state.bulk_create_products(25))
    with client(portal) as c:
        products = c.list_products()
    assert {p.id for p in products} == ids
    assert all(isinstance(p, Product) and p.namespace.startswith("bulk-") for p in products)


def test_consumer_and_producer_views_of_an_approved_grant(portal: StandinServer) -> None:
    s = portal.state
    producer, consumer = s.create_product("producer"), s.create_product("consumer")
    port = s.create_output_port(producer.id, "orders", tags=["gold"])
    s.request_access(consumer.id, port.id)
    link = s.approve(port.id, consumer.id)
    expected_port = OutputPort(port.id, "orders", "orders", producer.id, "restricted", "active", ("gold",))
    with client(portal) as c:
        consumer_view = c.input_ports(consumer.id)
        producer_view = c.output_port_input_ports(producer.id, port.id)
    assert consumer_view == [InputPort(link.id, "approved", port.id, expected_port, consumer.id, "data_products")]
    assert producer_view == consumer_view


def test_finalizer_and_status_writes_reach_the_portal(portal: StandinServer) -> None:
    p = portal.state.create_product("p")
    with client(portal) as c:
        c.add_finalizer(p.id, "provisioner")
        c.set_status(p.id, "active")
        assert c.get_product(p.id).finalizers == ("provisioner",)  # type: ignore[union-attr]
        assert portal.state.delete_product(p.id) == 202
        c.remove_finalizer(p.id, "provisioner")
        assert c.get_product(p.id) is None
        c.remove_finalizer(p.id, "provisioner")  # 404: already gone counts as done
    assert portal.state.writes == {"finalizer_add": 1, "status_put": 1, "finalizer_remove": 1}


def test_writes_to_a_gone_product_raise_portal_not_found(portal: StandinServer) -> None:
    with client(portal) as c:
        with pytest.raises(PortalNotFound, match="gone"):
            c.add_finalizer("missing", "provisioner")
        with pytest.raises(PortalNotFound):
            c.set_status("missing", "active")


def test_api_key_is_sent_as_x_key(portal: StandinServer) -> None:
    portal.state.api_key = "k-123"
    p = portal.state.create_product("p")
    with client(portal, api_key="k-123") as c:
        assert c.get_product(p.id) is not None


def test_wrong_key_is_a_portal_error_that_does_not_leak_the_key(portal: StandinServer) -> None:
    portal.state.api_key = "right-key"
    with client(portal, api_key="wrong-key-value") as c, pytest.raises(PortalError) as caught:
        c.list_products()
    assert not isinstance(caught.value, PortalUnavailable)
    message = str(caught.value)
    assert "403" in message and "PROVISIONER_PORTAL_API_KEY" in message
    assert "wrong-key-value" not in message and "right-key" not in message
    assert portal.state.requests["GET /api/v2/data_products"] == 1  # a 403 is not retried


def test_a_500_then_200_succeeds_after_one_retry(portal: StandinServer, caplog: pytest.LogCaptureFixture) -> None:
    p = portal.state.create_product("p")
    portal.state.fail_next(1, 500)
    with caplog.at_level(logging.WARNING), client(portal, retries=3) as c:
        assert c.get_product(p.id) is not None
    assert portal.state.requests[f"GET /api/v2/data_products/{p.id}"] == 2
    assert any(getattr(r, "event", "") == "portal.retry" for r in caplog.records)


def test_429_is_retried_too(portal: StandinServer) -> None:
    portal.state.fail_next(2, 429)
    with client(portal, retries=2) as c:
        assert c.list_products() == []
    assert portal.state.requests["GET /api/v2/data_products"] == 3


def test_persistent_500_raises_portal_unavailable_after_bounded_retries(portal: StandinServer) -> None:
    portal.state.fail_next(10, 503)
    with client(portal, retries=2) as c, pytest.raises(PortalUnavailable, match="503 after 3 attempt"):
        c.list_products()
    assert portal.state.requests["GET /api/v2/data_products"] == 3


def test_timeouts_are_retried_then_raise_portal_unavailable(portal: StandinServer) -> None:
    portal.state.lag = 0.5
    with client(portal, retries=1, timeout=0.05) as c, pytest.raises(PortalUnavailable, match="timed out"):
        c.list_products()


def test_an_unreachable_portal_is_portal_unavailable() -> None:
    c = PortalClient("http://127.0.0.1:9", retries=1, backoff=0.001, timeout=1.0)
    with c, pytest.raises(PortalUnavailable, match="could not be reached"):
        c.get_product("x")


def test_a_200_whose_body_is_not_json_is_temporary(portal: StandinServer) -> None:
    """A proxy's error page answered 200 is not the portal refusing: retry later, never fail for good."""
    portal.state.garble_next(1)
    with client(portal) as c:
        with pytest.raises(PortalUnavailable, match="not JSON") as err:
            c.list_products()
        assert err.value.temporary
        assert c.list_products() == []  # the next answer is the portal's again


def test_writes_send_the_portals_body_shapes() -> None:
    with respx.mock(base_url="http://portal.test", assert_all_called=True) as mock:
        add = mock.post("/api/v2/data_products/p1/finalizers").respond(200, json=None)
        put = mock.put("/api/v2/data_products/p1/status").respond(200, json=None)
        rem = mock.delete("/api/v2/data_products/p1/finalizers/provisioner").respond(200, json=None)
        with PortalClient("http://portal.test", api_key="k") as c:
            c.add_finalizer("p1", "provisioner")
            c.set_status("p1", "active")
            c.remove_finalizer("p1", "provisioner")
    assert json.loads(add.calls.last.request.content) == {"finalizer": "provisioner"}
    assert json.loads(put.calls.last.request.content) == {"status": "active"}
    assert rem.calls.last.request.headers["x-key"] == "k"


def test_ids_cannot_change_the_path() -> None:
    with respx.mock(base_url="http://portal.test") as mock:
        route = mock.get("/api/v2/data_products/a%2F..%2Fb").respond(404)
        with PortalClient("http://portal.test") as c:
            assert c.get_product("a/../b") is None
    assert route.called


def test_producer_view_with_an_embedded_output_port_needs_no_extra_call() -> None:
    """Older portals embedded ``output_port`` in the producer view (BaseDataProductOutputPortAssociationGet)."""
    op = {
        "id": "op1",
        "name": "Orders",
        "namespace": "orders",
        "description": "",
        "status": "active",
        "access_type": "restricted",
        "data_product_id": "prod",
        "tags": [{"id": "t", "value": "gold"}],
    }
    item = {"id": "ip1", "status": "approved", "output_port_id": "op1", "output_port": op}
    item["consuming_abstract_data_product_id"] = "cons"
    with respx.mock(base_url="http://portal.test", assert_all_mocked=True) as mock:
        mock.get("/api/v2/data_products/prod/output_ports/op1/input_ports/").respond(200, json={"input_ports": [item]})
        with PortalClient("http://portal.test") as c:
            ports = c.output_port_input_ports("prod", "op1")
    assert ports == [
        InputPort(
            "ip1",
            "approved",
            "op1",
            OutputPort("op1", "Orders", "orders", "prod", "restricted", "active", ("gold",)),
            "cons",
        )
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"products": []}, "data_products"),
        ({"data_products": [{"id": "x", "name": "n", "status": "active"}]}, "namespace"),
        ({"data_products": [{"id": 1, "name": "n", "namespace": "n", "status": "active"}]}, "'id' of type int"),
        (
            {"data_products": [{"id": "x", "name": "n", "namespace": "n", "status": "s", "tags": [{"id": "t"}]}]},
            "value",
        ),
        ([], "list where an object"),
    ],
)
def test_a_wrong_shape_is_a_portal_error_naming_the_field(body: object, field: str) -> None:
    with respx.mock(base_url="http://portal.test") as mock:
        mock.get("/api/v2/data_products").respond(200, json=body)
        with PortalClient("http://portal.test") as c, pytest.raises(PortalError, match=field):
            c.list_products()


def test_a_422_names_the_portal_detail() -> None:
    with respx.mock(base_url="http://portal.test") as mock:
        mock.put("/api/v2/data_products/p1/status").respond(422, json={"detail": "Cannot manually set status"})
        c = PortalClient("http://portal.test", retries=3)
        with c, pytest.raises(PortalError, match="422: Cannot manually set status"):
            c.set_status("p1", "deleting")
        assert mock.calls.call_count == 1


def test_transport_errors_are_retried_with_respx() -> None:
    with respx.mock(base_url="http://portal.test") as mock:
        route = mock.get("/api/v2/data_products")
        route.side_effect = [httpx.ConnectTimeout("slow"), httpx.Response(200, json={"data_products": []})]
        with PortalClient("http://portal.test", backoff=0.001) as c:
            assert c.list_products() == []
        assert route.call_count == 2
