"""The application and request keys of inbox-api."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from pymongo import AsyncMongoClient

from inbox_api.settings import InboxApiSettings
from inbox_api.store.channels import Channels
from inbox_api.store.inbox import Inbox
from inbox_api.store.ledger import Ledger
from inbox_common.broker.connection import Broker
from inbox_common.broker.publisher import ConfirmedPublisher
from inbox_common.broker.topology import Names
from inbox_common.store.client import Database, Document

if TYPE_CHECKING:
    from inbox_api.rest.auth import Principal

SETTINGS = web.AppKey("settings", InboxApiSettings)
MONGO: web.AppKey[AsyncMongoClient[Document]] = web.AppKey("mongo")
DB: web.AppKey[Database] = web.AppKey("db")
CHANNELS = web.AppKey("channels", Channels)
INBOX = web.AppKey("inbox", Inbox)
LEDGER = web.AppKey("ledger", Ledger)
BROKER = web.AppKey("broker", Broker)
PUBLISHER = web.AppKey("publisher", ConfirmedPublisher)
NAMES = web.AppKey("names", Names)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
