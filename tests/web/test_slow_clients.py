"""Slow and vanishing clients against the real app served by real uvicorn on loopback (``serve``'s own config).

A body that does not arrive within the body timeout is answered 408 and its connection closed, however slowly it
trickles; a client that hangs up mid-body leaves no ERROR line; neither stores anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn

from provisioner.cli.serve import uvicorn_config
from provisioner.web.auth import url_token
from tests.web.conftest import SECRET, Web, WebFactory, v2_sample

BODY_TIMEOUT = 0.5
#: Bound on waiting for the server's answer: generous, as the machine may be busy. Never reached when all is well.
ANSWER_WITHIN = 30.0
SLOW_CLIENTS = 20


@contextlib.asynccontextmanager
async def served(web: Web) -> AsyncIterator[int]:
    """Serve ``web.app`` with uvicorn, configured as ``provisioner serve`` does, on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # listening before uvicorn starts: connections wait in the backlog, no need to poll for it
    config = uvicorn_config(web.app, host="127.0.0.1", port=0, body_timeout_seconds=BODY_TIMEOUT)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # pytest owns the signals
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


def request_head(length: int) -> bytes:
    """A v2 delivery's request line and headers, announcing ``length`` bytes of body."""
    return (
        f"POST /webhooks/portal/v2?token={url_token(SECRET)} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def answer(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), ANSWER_WITHIN)


async def test_a_body_that_does_not_arrive_in_time_is_408_and_the_connection_closed(make_web: WebFactory) -> None:
    web = await make_web(body_timeout_seconds=BODY_TIMEOUT)
    body = v2_sample("data_product")["raw_body"].encode()
    async with served(web) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_head(len(body)) + body[:10])  # then nothing more
        await writer.drain()
        received = await answer(reader)  # returns only once the server has closed the connection
        writer.close()
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"body not received within 0.5 s" in received
    assert web.stored_nothing()


async def test_slow_clients_are_cut_off_and_the_intake_keeps_serving(make_web: WebFactory) -> None:
    web = await make_web(body_timeout_seconds=BODY_TIMEOUT)
    body = v2_sample("data_product")["raw_body"].encode()

    async def trickle() -> bytes:
        """A client sending its body a byte at a time, as long as the server lets it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_head(len(body)))
        reading = asyncio.create_task(answer(reader))
        for byte in body[:-1]:  # never the last byte: the body can only end by the server's deadline
            if reading.done():
                break
            writer.write(bytes([byte]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.05)  # the client's pace, not a wait for an event
        try:
            received = await reading
        except ConnectionResetError:
            # The server closed on a body it had not read; a byte the client sent after the 408 makes the kernel
            # answer with a reset that can discard the 408 before it is read. Cut off either way.
            received = b"reset by the server"
        writer.close()
        return received

    async with served(web) as port:
        answers = await asyncio.gather(*(trickle() for _ in range(SLOW_CLIENTS)))
        assert web.stored_nothing()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_head(len(body)).replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n") + body)
        await writer.drain()
        good = await answer(reader)
        writer.close()
    cut_off = {b"HTTP/1.1 408 Request Timeout", b"reset by the server"}
    assert all(a.split(b"\r\n", 1)[0] in cut_off for a in answers), answers
    assert any(a.startswith(b"HTTP/1.1 408 ") for a in answers)
    assert good.startswith(b"HTTP/1.1 202 ")
    assert web.count("provisioner_inbox") == 1


async def test_a_client_hanging_up_mid_body_is_not_an_error(
    make_web: WebFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    web = await make_web(body_timeout_seconds=30)
    body = v2_sample("data_product")["raw_body"].encode()
    handled = asyncio.Event()
    loop = asyncio.get_running_loop()

    class Watch(logging.Handler):
        """Sets ``handled`` once the app has dealt with the hang-up, whichever way it did."""

        def emit(self, record: logging.LogRecord) -> None:
            if getattr(record, "event", None) == "webhook.disconnected" or record.levelno >= logging.ERROR:
                loop.call_soon_threadsafe(handled.set)

    watch = Watch()
    logging.getLogger().addHandler(watch)
    try:
        async with served(web) as port:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_head(len(body)) + body[:10])
            await writer.drain()
            writer.transport.abort()  # hang up mid-body
            await asyncio.wait_for(handled.wait(), ANSWER_WITHIN)
    finally:
        logging.getLogger().removeHandler(watch)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert any(getattr(r, "event", None) == "webhook.disconnected" for r in caplog.records)
    assert web.stored_nothing()
