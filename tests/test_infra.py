"""The test infrastructure itself: real broker and store reachable, isolation helpers work."""

from __future__ import annotations

from typing import Any

import aio_pika
import pytest
from aiohttp import web
from pymongo import AsyncMongoClient

from inbox_common.local.ports import free_port
from inbox_common.local.processes import wait_http
from inbox_testkit.backends import AmqpNamespace


@pytest.mark.integration
async def test_broker_round_trip_in_namespaced_queue(
    amqp_url: str, amqp_namespace: AmqpNamespace
) -> None:
    queue_name = amqp_namespace.qualify("smoke")
    amqp_namespace.track(queue_name)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        await channel.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=queue_name)
        message = await queue.get(timeout=5)
        await message.ack()
        assert message.body == b"ping"
        await queue.delete(if_unused=False, if_empty=False)


@pytest.mark.integration
async def test_tracked_names_are_deleted(amqp_url: str, namespace: str) -> None:
    ns = AmqpNamespace(namespace)
    queue_name, exchange_name = ns.qualify("left.queue"), ns.qualify("left.exchange")
    ns.track(queue_name, exchange_name, ns.qualify("never.declared"))
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC)
        await channel.declare_queue(queue_name)

        await ns.delete_tracked(amqp_url)

        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_queue(queue_name, passive=True)
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.declare_exchange(exchange_name, passive=True)


def test_namespace_refuses_foreign_names(namespace: str) -> None:
    ns = AmqpNamespace(namespace)
    with pytest.raises(ValueError, match="outside"):
        ns.track("wa.inbox.webhooks")
    with pytest.raises(ValueError, match="outside"):
        ns.track(namespace + "x.queue")


@pytest.mark.integration
async def test_store_round_trip(mongo_url: str, mongo_db_name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_url, serverSelectionTimeoutMS=5000
    )
    async with client:
        assert (await client.admin.command("ping"))["ok"] == 1
        collection = client[mongo_db_name]["smoke"]
        await collection.insert_one({"_id": "a", "value": 1})
        assert await collection.find_one({"_id": "a"}) == {"_id": "a", "value": 1}


async def test_wait_http_can_accept_any_status() -> None:
    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"status": "down"}, status=503)

    app = web.Application()
    app.router.add_get("/api/health", unavailable)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/api/health"
        assert await wait_http(url, timeout=5, want=None) == 503
        with pytest.raises(TimeoutError, match=r"did not answer 200 .*HTTP 503"):
            await wait_http(url, timeout=0.3)
    finally:
        await runner.cleanup()


async def test_wait_http_names_the_silent_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/livez"
    with pytest.raises(TimeoutError, match=r"/livez did not answer at all"):
        await wait_http(url, timeout=0.3, want=None)
