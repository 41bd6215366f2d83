"""Connecting WhatsApp numbers: a channel per phone_number_id, and the webhooks that arrived
for it before it existed."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from inbox_api.errors import ConflictError, NotFoundError
from inbox_api.outbound import OutboundService
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import Names
from inbox_common.http import ApiError
from inbox_common.logging import get_logger
from inbox_common.replay import replay_webhooks
from inbox_common.store.channels import Channels
from inbox_common.store.client import Document
from inbox_common.store.ledger import Ledger, LedgerFilter
from inbox_common.whatsapp.cloud_api import CloudApiClient
from inbox_common.whatsapp.errors import Classification, CloudApiError

log = get_logger(__name__)

# Graph's "unsupported get request / object does not exist" (code 100).
UNKNOWN_OBJECT = 100


class ChannelService:
    def __init__(
        self,
        channels: Channels,
        ledger: Ledger,
        publisher: ConfirmedPublisher,
        names: Names,
        outbound: OutboundService,
        cloud: CloudApiClient,
    ) -> None:
        self._cloud = cloud
        self._channels = channels
        self._outbound = outbound
        self._ledger = ledger
        self._publisher = publisher
        self._names = names

    async def create(self, *, tenant: str, fields: dict[str, Any]) -> tuple[Document, int]:
        """Create the channel and replay the webhooks that failed for want of it; returns the
        channel and how many webhooks were replayed."""
        try:
            doc = await self._channels.create(tenant=tenant, fields=fields)
        except DuplicateKeyError:
            raise ConflictError(
                f"a channel with phone_number_id {fields['phone_number_id']} already exists",
                {"field": "phone_number_id"},
            ) from None
        return doc, await self._replay_unknown_channel(doc["phone_number_id"])

    async def _replay_unknown_channel(self, phone_number_id: str) -> int:
        """Meta got a 200 for events that arrived before the channel existed and will not
        resend them: replay them now. A broker outage does not fail the creation (replay them
        later with ``inbox-ops webhooks replay --error-code unknown_channel``)."""
        selection = LedgerFilter(error_code="unknown_channel", phone_number_id=phone_number_id)
        try:
            replayed = await replay_webhooks(self._ledger, self._publisher, self._names, selection)
        except PublishFailedError as exc:
            log.warning("channel.replay_failed", phone_number_id=phone_number_id, error=str(exc))
            return 0
        if replayed:
            log.info("channel.replayed", phone_number_id=phone_number_id, events=replayed)
        return replayed

    async def reconnect(
        self, channel_id: ObjectId, tenant: str | None, access_token: str
    ) -> tuple[Document, int]:
        """A disconnected channel gets a new token, once the Cloud API accepts it for the
        number; the messages held meanwhile are queued again. Returns the channel and how
        many messages were queued."""
        current = await self._channels.get(channel_id, tenant)
        if current is None:
            raise NotFoundError("channel", channel_id)
        await self._check_token(current["phone_number_id"], access_token)
        doc = await self._channels.reconnect(channel_id, tenant, access_token)
        if doc is None:
            raise NotFoundError("channel", channel_id)
        requeued = await self._outbound.requeue_held(doc)
        log.info("channel.reconnected", channel_id=str(channel_id), requeued=requeued)
        return doc, requeued

    async def _check_token(self, phone_number_id: str, token: str) -> None:
        """The Cloud API reads the number's node with ``token``, or the reconnect is refused
        saying exactly why."""
        try:
            await self._cloud.phone_number(phone_number_id, token)
        except CloudApiError as error:
            if error.code == UNKNOWN_OBJECT:
                raise ApiError(
                    422,
                    "unknown_number",
                    f"the Cloud API knows no number {phone_number_id} for this token ({error}); "
                    "check the phone number ID and that the token's app has access to the WABA",
                ) from error
            if error.classification is Classification.RETRY:
                raise ApiError(
                    503,
                    "cloud_api_unavailable",
                    f"the Cloud API could not check the token now ({error}); try again",
                ) from error
            raise ApiError(
                422,
                "token_refused",
                f"the Cloud API refused the token ({error}); create a new system-user token "
                "with whatsapp_business_messaging access and reconnect with it",
            ) from error

    async def for_tenant(self, tenant: str | None) -> list[Document]:
        """A tenant's channels; ``None``: every tenant's (superadmin)."""
        return await self._channels.for_tenant(tenant)

    async def phone_number_ids(self, tenant: str) -> list[str]:
        return await self._channels.phone_number_ids(tenant)
