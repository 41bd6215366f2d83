"""Every change agents should see, as a live event (``inbox_api.live`` carries it to every
replica's WebSocket clients of the tenant).

Events name what changed and carry it as the REST API shows it:

- ``message.created``: a message arrived, was sent from here, or a note was added (a
  ``MessageOut``);
- ``message.updated``: a message's status, send state, content (edit) or deletion changed
  (a ``MessageOut``);
- ``conversation.updated``: assigned, closed, reopened, read, labelled, or a new message
  moved its preview (a ``ConversationOut``);
- ``channel.updated``: a channel was disconnected by Meta or reconnected (a ``ChannelOut``).

Announcing is best effort and never fails the change it announces: the store holds the
truth, and a client that missed events reloads (see ``inbox_api.live``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bson import ObjectId

from inbox_api.rest import views
from inbox_api.store.inbox import CONVERSATION_FIELDS, Writes
from inbox_common.logging import get_logger
from inbox_common.store.client import Database, Document
from inbox_common.store.schema import CHANNELS, CONVERSATIONS, MESSAGES

log = get_logger(__name__)

Publish = Callable[[str, str, dict[str, Any]], None]


class Events:
    def __init__(self, db: Database, publish: Publish) -> None:
        self._channels = db[CHANNELS]
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]
        self._publish = publish

    def conversation(self, doc: Document) -> None:
        self._emit(
            doc["tenant"], "conversation.updated", views.conversation(doc).model_dump(mode="json")
        )

    def message(self, doc: Document, *, created: bool = False) -> None:
        kind = "message.created" if created else "message.updated"
        self._emit(doc["tenant"], kind, views.message(doc).model_dump(mode="json"))

    def channel(self, doc: Document) -> None:
        self._emit(doc["tenant"], "channel.updated", views.channel(doc).model_dump(mode="json"))

    async def message_changed(self, message_id: ObjectId) -> None:
        """A message changed in the store (the sender's doing): announce it as it is now."""
        try:
            doc = await self._messages.find_one({"_id": message_id})
            if doc is not None and _in_a_conversation(doc):
                self.message(doc)
                if doc.get("send_state") == "held":
                    await self._conversations_of([doc["conversation_id"]])
        except Exception as exc:  # announcing never fails the change
            log.warning("events.failed", message_id=str(message_id), error=str(exc))

    async def channel_changed(self, channel_id: ObjectId) -> None:
        """A channel was disconnected or reconnected: announce it as it is now."""
        try:
            doc = await self._channels.find_one({"_id": channel_id})
            if doc is not None:
                self.channel(doc)
        except Exception as exc:  # announcing never fails the change
            log.warning("events.failed", channel_id=str(channel_id), error=str(exc))

    async def written(self, writes: Writes) -> None:
        """A consumer flush is stored: announce its new messages, statuses and conversations
        (two reads per flush, whatever its size)."""
        try:
            await self._written(writes)
        except Exception as exc:
            log.warning("events.failed", error=f"{type(exc).__name__}: {exc}")

    async def _written(self, writes: Writes) -> None:
        wamids = [doc["wamid"] for doc, _ in writes.new_messages]
        wamids += [wamid for _, wamid, _ in writes.statuses]
        created = {doc["wamid"] for doc, _ in writes.new_messages}
        if wamids:
            async for doc in self._messages.find({"wamid": {"$in": wamids}}):
                if _in_a_conversation(doc):
                    self.message(doc, created=doc["wamid"] in created)
        await self._conversations_of(list(writes.conversations))
        for channel_id in writes.stopped_channels:
            await self.channel_changed(channel_id)

    async def _conversations_of(self, ids: Iterable[ObjectId]) -> None:
        wanted = list(ids)
        if not wanted:
            return
        async for doc in self._conversations.find({"_id": {"$in": wanted}}, CONVERSATION_FIELDS):
            self.conversation(doc)

    def _emit(self, tenant: str, kind: str, data: dict[str, Any]) -> None:
        try:
            self._publish(tenant, kind, data)
        except Exception as exc:
            log.warning("events.failed", kind=kind, error=f"{type(exc).__name__}: {exc}")


def _in_a_conversation(doc: Document) -> bool:
    """Whether a conversation shows the message: a placeholder of an early status does not,
    nor does a campaign's message to someone who never wrote (its campaign's funnel counts
    it), so a 100,000-recipient campaign does not flood every agent's live updates."""
    return doc.get("direction") is not None and doc.get("conversation_id") is not None
