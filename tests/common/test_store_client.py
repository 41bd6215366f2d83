"""The services' store client: a request the store accepted and never answers fails as an
outage after the socket timeout instead of holding its caller forever."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from pymongo.errors import NetworkTimeout

from inbox_common.settings import MongoSettings
from inbox_common.store.client import create_client, is_transient
from inbox_testkit.faults.proxy import TcpProxy


def _proxied(proxy: TcpProxy, mongo_url: str) -> str:
    """``mongo_url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(mongo_url)
    host, port = proxy.address
    return parts._replace(netloc=f"{host}:{port}").geturl()


async def _store_proxy(mongo_url: str) -> TcpProxy:
    parts = urlsplit(mongo_url)
    proxy = TcpProxy([(parts.hostname or "127.0.0.1", parts.port or 27017)], name="store")
    await proxy.start()
    return proxy


async def test_an_unanswered_request_fails_as_an_outage_after_the_socket_timeout(
    mongo_url: str, mongo_db_name: str
) -> None:
    proxy = await _store_proxy(mongo_url)
    client = create_client(
        _proxied(proxy, mongo_url), app_name="t", timeout_ms=2000, socket_timeout_ms=300
    )
    try:
        collection = client[mongo_db_name]["socket_timeout"]
        await collection.insert_one({"_id": "before"})
        # The connection stays open and nothing comes back: no FIN, no RST.
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(NetworkTimeout) as caught:
            # Without the socket timeout the write waits for the next heartbeat failure
            # (10 s and more); the bound here is far below that and far above 300 ms.
            await asyncio.wait_for(collection.insert_one({"_id": "during"}), 5)
        assert time.monotonic() - started < 5
        assert is_transient(caught.value), "the consumers must retry it as a store outage"
        proxy.heal()
        await collection.insert_one({"_id": "after"})
        assert await collection.count_documents({}) >= 2
    finally:
        await client.close()
        await proxy.close()


def test_the_url_and_the_setting_decide_the_socket_timeout() -> None:
    base = "mongodb://127.0.0.1:1/?directConnection=true"
    from_setting = create_client(base, app_name="t", socket_timeout_ms=1234)
    from_url = create_client(f"{base}&socketTimeoutMS=999", app_name="t", socket_timeout_ms=1234)
    unbounded = create_client(base, app_name="t", socket_timeout_ms=None)
    assert from_setting.options.pool_options.socket_timeout == pytest.approx(1.234)
    assert from_url.options.pool_options.socket_timeout == pytest.approx(0.999)
    assert unbounded.options.pool_options.socket_timeout is None
    assert MongoSettings().mongodb_socket_timeout_ms == 30_000
