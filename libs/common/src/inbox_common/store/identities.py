"""Contacts by identity: one contact (and one conversation) per channel and person, whether
Meta names the person by phone (``wa_id``), by business-scoped user id (BSUID,
``user_id``), or both, in whatever order the webhooks arrive.

A contact holds the person's current identifiers: ``wa_id`` (absent when Meta does not share
the phone) and ``user_id`` (absent only on contacts from before BSUIDs), both unique per
channel (partial unique indexes: a missing field is no key). Its ``conversation_id`` is
fixed when the contact is first created (from the identifier it was first known by, the same
formula conversations used before BSUIDs, so every existing conversation id stays valid) and
never changes when the identifiers do: that is what keeps one conversation per person.

Resolution (:meth:`Identities.resolve_many`) finds the contacts that hold any of the given
identifiers with one read, creates the missing ones (an insert; a concurrent creator's
duplicate-key error means "found"), adds an identifier a contact lacks (a conditional
``$set``; a duplicate key means another contact holds it) and, when two contacts turn out to
be one person (phone-only and BSUID-only webhooks arrived before the one that links them),
merges them: the older contact survives, the younger one is marked ``merged_into`` and gives
up its identifiers, its conversation's messages move to the survivor's conversation and its
summary is folded in; the younger conversation is marked ``merged_into`` too, so its id still
leads to the person. Every step is idempotent and conditional, so a crash half-way or two
replicas merging at once end in the same state.

Identity changes Meta reports as ``system`` messages (``user_changed_number``,
``user_changed_user_id``) move the identifiers of the same contact (:meth:`Identities.change`),
with the previous ones kept in ``identity_history``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from inbox_common.store.bulk import insert_new
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CONTACTS, CONVERSATIONS, MESSAGES

# Meta's BSUID: an ISO country code, a period, then up to 128 letters and digits. A phone
# number (wa_id) is digits only, so the two never look alike.
BSUID = re.compile(r"^[A-Z]{2}\.[A-Za-z0-9]{1,128}$")
_MAX_ROUNDS = 8


def conversation_id(channel_id: ObjectId, key: str) -> ObjectId:
    """The conversation id of a contact first known by ``key`` (its phone, else its BSUID)."""
    return ObjectId(hashlib.sha256(f"{channel_id}:{key}".encode()).digest()[:12])


def lit(value: Any) -> dict[str, Any]:
    """A value that enters an update pipeline as data, never as an expression."""
    return {"$literal": value}


def newer(at: Any, wamid: str) -> dict[str, Any]:
    """True when a message at ``at`` with ``wamid`` is newer than the conversation's last
    (a later time, or the same time and a greater wamid): the same order in every replica."""
    return {
        "$or": [
            {"$lt": ["$last_message_at", lit(at)]},
            {
                "$and": [
                    {"$eq": ["$last_message_at", lit(at)]},
                    {"$lt": ["$last_message_wamid", lit(wamid)]},
                ]
            },
        ]
    }


@dataclass(frozen=True, slots=True)
class Identity:
    """How a webhook names a person: a phone, a BSUID, or both."""

    wa_id: str | None = None
    user_id: str | None = None

    @classmethod
    def of(cls, wa_id: str | None, user_id: str | None) -> Identity:
        """Empty strings are no identifier; a BSUID given as a wa_id (as older webhooks and
        older code did) is a BSUID."""
        wa_id, user_id = wa_id or None, user_id or None
        if wa_id is not None and BSUID.match(wa_id):
            wa_id, user_id = None, user_id or wa_id
        return cls(wa_id, user_id)

    def __bool__(self) -> bool:
        return bool(self.wa_id or self.user_id)

    @property
    def key(self) -> str:
        """The identifier a new contact is keyed by (phone first, as before BSUIDs)."""
        key = self.wa_id or self.user_id
        if key is None:
            raise ValueError("an identity needs a wa_id or a user_id")
        return key


@dataclass(frozen=True, slots=True)
class ContactRef:
    """A resolved contact: its id, its conversation, its current identifiers and the profile
    it holds (so a webhook that repeats it costs no write)."""

    id: ObjectId
    conversation_id: ObjectId
    wa_id: str | None
    user_id: str | None
    profile: tuple[tuple[str, str], ...] = ()

    def holds(self, field: str, value: str) -> bool:
        return (field, value) in self.profile


PROFILE_FIELDS = ("name", "username", "parent_user_id")


def _ref(doc: Document) -> ContactRef:
    identity = Identity.of(doc.get("wa_id"), doc.get("user_id"))
    conversation = doc.get("conversation_id") or conversation_id(
        doc["channel_id"], doc.get("wa_id") or doc.get("user_id") or ""
    )
    profile = tuple((f, str(doc[f])) for f in PROFILE_FIELDS if doc.get(f))
    return ContactRef(doc["_id"], conversation, identity.wa_id, identity.user_id, profile)


class Identities:
    def __init__(self, db: Database) -> None:
        self._contacts = db[CONTACTS]
        self._conversations = db[CONVERSATIONS]
        self._messages = db[MESSAGES]

    async def resolve_many(
        self, channel: Document, identities: Iterable[Identity]
    ) -> dict[Identity, ContactRef]:
        """The contact of each identity of ``channel``, created or linked as needed.

        The common case (every person known, nothing new) costs one read; new people that
        share no identifier with anyone else of the call cost an insert each (one write for
        all of them). The rest (links, merges, people named two ways in one call) take the
        careful path, identities with both identifiers first, so that the ones with a single
        identifier then find the person they belong to.
        """
        wanted = list(dict.fromkeys(i for i in identities if i))
        if not wanted:
            return {}
        found = await self._find(channel["_id"], wanted)
        resolved: dict[Identity, ContactRef] = {}
        new: list[Identity] = []
        careful: list[Identity] = []
        for identity in wanted:
            matches = _matching(found, identity)
            overlaps = any(o != identity and _overlap(o, identity) for o in wanted)
            if not matches and not overlaps:
                new.append(identity)
            elif (
                len(matches) == 1
                and _holds(matches[0], identity)
                and "merged_into" not in matches[0]
                and not overlaps
            ):
                resolved[identity] = _ref(matches[0])
            else:
                careful.append(identity)
        created = await self._create(channel, new)
        resolved.update(created)
        careful += [i for i in new if i not in created]  # lost a race: find it
        careful.sort(key=lambda i: (i.wa_id is None) + (i.user_id is None))
        for identity in careful:
            resolved[identity] = await self.resolve(channel, identity)
        return resolved

    async def refold(self, conversation_ids: Iterable[ObjectId]) -> int:
        """Fold again into their survivors the conversations among ``conversation_ids`` that
        were merged while a flush was writing to them (a message planned for a conversation
        that another replica merged meanwhile); returns how many. One read when none was."""
        ids = list(conversation_ids)
        if not ids:
            return 0
        merged = await self._conversations.find(
            {"_id": {"$in": ids}, "merged_into": {"$exists": True}}, {"merged_into": 1}
        ).to_list()
        for doc in merged:
            await self._merge_conversations(doc["merged_into"], doc["_id"])
        return len(merged)

    async def resolve(self, channel: Document, identity: Identity) -> ContactRef:
        """The contact of ``identity``: found, created, linked or merged (see the module
        docstring); safe against concurrent resolvers of the same person."""
        for _ in range(_MAX_ROUNDS):
            found = _matching(await self._find(channel["_id"], [identity]), identity)
            live = await self._survivors(found)
            if not live:
                created = await self._create(channel, [identity])
                if identity in created:
                    return created[identity]
                continue  # someone created it meanwhile: find it
            survivor = live[0]
            for loser in live[1:]:
                await self.merge(survivor, loser)
            if await self._link(survivor, identity):
                return _ref(await self._get(survivor["_id"]))
        raise RuntimeError(f"could not settle the contact of {identity} (too many races)")

    async def change(
        self,
        channel: Document,
        previous: Identity,
        current: Identity,
        *,
        at: datetime,
        wamid: str,
        kind: str,
    ) -> ContactRef:
        """The person ``previous`` is now named ``current`` (a ``system`` message of type
        ``kind``): the same contact takes the new identifiers, the old ones go to its
        ``identity_history``. Applying it again changes nothing."""
        ref = await self.resolve(channel, previous if previous else current)
        entry = {"wamid": wamid, "kind": kind, "at": at,
                 "wa_id": ref.wa_id, "user_id": ref.user_id}  # fmt: skip
        update: dict[str, Any] = {}
        remove: dict[str, Any] = {}
        for field in ("wa_id", "user_id"):
            new_value = getattr(current, field)
            if new_value is not None and new_value != getattr(ref, field):
                update[field] = new_value
            elif field == "wa_id" and kind == "user_changed_number" and new_value is None:
                remove[field] = ""
        if not update and not remove:
            return ref
        await self._free(channel["_id"], current, keep=ref.id)
        ops: dict[str, Any] = {"$push": {"identity_history": entry}}
        if "user_id" in update and ref.user_id is not None:
            # A late webhook may still name the person by the old BSUID (BSUIDs are never
            # given to anyone else; phone numbers are, so a former phone finds no one).
            ops["$addToSet"] = {"former_user_ids": ref.user_id}
        if update:
            ops["$set"] = update
        if remove:
            ops["$unset"] = remove
        # Once per system message: its wamid in the history makes a second apply a no-op.
        await self._contacts.update_one(
            {"_id": ref.id, "identity_history.wamid": {"$ne": wamid}}, ops
        )
        return _ref(await self._get(ref.id))

    async def merge(self, survivor: Document, loser: Document) -> None:
        """Fold ``loser`` (a younger contact of the same person) into ``survivor``."""
        now = datetime.now(UTC)
        await self._contacts.update_one(
            {"_id": loser["_id"], "merged_into": {"$exists": False}},
            {"$set": {"merged_into": survivor["_id"], "merged_at": now}},
        )
        taken = {f: loser[f] for f in ("wa_id", "user_id") if loser.get(f)}
        if taken:
            await self._contacts.update_one(
                {"_id": loser["_id"]},
                {
                    "$unset": dict.fromkeys(taken, ""),
                    "$push": {"identity_history": {"kind": "merged", "at": now, **taken}},
                },
            )
        for field, value in taken.items():
            if not survivor.get(field):
                # Only if it still lacks one: a survivor's own identifier is never replaced.
                await self._contacts.update_one(
                    {"_id": survivor["_id"], field: {"$exists": False}}, {"$set": {field: value}}
                )
        await self._merge_conversations(_ref(survivor).conversation_id, _ref(loser).conversation_id)
        await self.show(await self._get(survivor["_id"]))

    async def show(self, contact: Document) -> None:
        """Let ``contact``'s conversation show its current identifiers."""
        ref = _ref(contact)
        await self._conversations.update_one(
            {"_id": ref.conversation_id},
            {"$set": {"contact_id": ref.id, "wa_id": ref.wa_id, "user_id": ref.user_id}},
        )

    async def _merge_conversations(self, into: ObjectId, source: ObjectId) -> None:
        if into == source:
            return
        # Upserted: the younger contact's conversation may not exist yet (its first message
        # still being written elsewhere); the marker must be there before it is, so that the
        # writer's refold finds it merged.
        await self._conversations.update_one(
            {"_id": source}, {"$set": {"merged_into": into}}, upsert=True
        )
        await self._messages.update_many(
            {"conversation_id": source}, {"$set": {"conversation_id": into}}
        )
        old = await self._conversations.find_one({"_id": source})
        if old is None:
            return
        await self._conversations.update_one({"_id": into}, fold_op(old), upsert=True)

    # --- the steps --------------------------------------------------------------------------

    async def _find(self, channel_id: ObjectId, identities: Sequence[Identity]) -> list[Document]:
        phones = sorted({i.wa_id for i in identities if i.wa_id})
        bsuids = sorted({i.user_id for i in identities if i.user_id})
        clauses: list[dict[str, Any]] = []
        if phones:
            clauses.append({"wa_id": {"$in": phones}})
        if bsuids:
            # Older code stored a BSUID in wa_id when the phone was missing.
            clauses += [
                {"user_id": {"$in": bsuids}},
                {"wa_id": {"$in": bsuids}},
                {"former_user_ids": {"$in": bsuids}},
            ]
        if not clauses:
            return []
        return await self._contacts.find({"channel_id": channel_id, "$or": clauses}).to_list()

    async def _survivors(self, found: list[Document]) -> list[Document]:
        """The live contacts behind ``found`` (following ``merged_into``), oldest first."""
        live: dict[ObjectId, Document] = {}
        for doc in found:
            hops = 0
            while doc.get("merged_into") is not None and hops < _MAX_ROUNDS:
                target = await self._contacts.find_one({"_id": doc["merged_into"]})
                if target is None:
                    break
                doc, hops = target, hops + 1
            live[doc["_id"]] = doc
        return sorted(
            live.values(),
            key=lambda d: (d.get("created_at") or datetime.min.replace(tzinfo=UTC), d["_id"]),
        )

    async def _create(
        self, channel: Document, identities: Sequence[Identity]
    ) -> dict[Identity, ContactRef]:
        """Insert a contact per identity (one write); those another writer created (or holds
        an identifier of) meanwhile are left out, for the careful path to find."""
        now = datetime.now(UTC)
        docs: list[Document] = []
        for identity in identities:
            doc: Document = {
                "_id": ObjectId(),
                "channel_id": channel["_id"],
                "tenant": channel["tenant"],
                "conversation_id": conversation_id(channel["_id"], identity.key),
                "created_at": now,
                "identity_history": [],
            }
            if identity.wa_id:
                doc["wa_id"] = identity.wa_id
            if identity.user_id:
                doc["user_id"] = identity.user_id
            docs.append(doc)
        taken = set(await insert_new(self._contacts, docs))
        return {
            identity: _ref(doc)
            for index, (identity, doc) in enumerate(zip(identities, docs, strict=True))
            if index not in taken
        }

    async def _link(self, contact: Document, identity: Identity) -> bool:
        """Give ``contact`` the identifiers of ``identity`` it lacks; False when another
        contact holds one of them (the caller merges and tries again)."""
        for field in ("wa_id", "user_id"):
            value = getattr(identity, field)
            current = Identity.of(contact.get("wa_id"), contact.get("user_id"))
            if value is None or getattr(current, field) is not None:
                continue
            update: dict[str, Any] = {"$set": {field: value}}
            if field == "user_id" and contact.get("wa_id") == value:
                update["$unset"] = {"wa_id": ""}  # a BSUID older code stored as a wa_id
            try:
                changed = await self._contacts.find_one_and_update(
                    {"_id": contact["_id"], "merged_into": {"$exists": False}},
                    update,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                return False
            if changed is None:
                return False  # merged meanwhile
            contact = changed
        return True

    async def _free(self, channel_id: ObjectId, identity: Identity, *, keep: ObjectId) -> None:
        """Merge into ``keep`` any other contact holding ``identity``'s identifiers (the
        customer wrote from the new number before the system message arrived)."""
        found = [d for d in await self._find(channel_id, [identity]) if d["_id"] != keep]
        kept = await self._get(keep)
        for other in await self._survivors(found):
            if other["_id"] != keep:
                await self.merge(kept, other)

    async def _get(self, contact_id: ObjectId) -> Document:
        doc = await self._contacts.find_one({"_id": contact_id})
        if doc is None:
            raise RuntimeError(f"contact {contact_id} vanished")
        return doc


def _matching(found: Iterable[Document], identity: Identity) -> list[Document]:
    matches = []
    for doc in found:
        held = Identity.of(doc.get("wa_id"), doc.get("user_id"))
        former = doc.get("former_user_ids") or []
        if (
            (identity.wa_id and held.wa_id == identity.wa_id)
            or (identity.user_id and held.user_id == identity.user_id)
            or (identity.user_id and identity.user_id in former)
        ):
            matches.append(doc)
    return matches


def _overlap(a: Identity, b: Identity) -> bool:
    return bool((a.wa_id and a.wa_id == b.wa_id) or (a.user_id and a.user_id == b.user_id))


def _holds(doc: Document, identity: Identity) -> bool:
    """Whether ``doc`` already holds every identifier of ``identity``, stored as such."""
    return (identity.wa_id is None or doc.get("wa_id") == identity.wa_id) and (
        identity.user_id is None or doc.get("user_id") == identity.user_id
    )


def fold_op(old: Document) -> list[dict[str, Any]]:
    """The pipeline that folds conversation ``old``'s summary into another: its unread
    messages join, its last message wins if newer, the 24-hour window opens at the later
    inbound time. Idempotent."""
    first: dict[str, Any] = {
        "channel_id": {"$ifNull": ["$channel_id", lit(old.get("channel_id"))]},
        "tenant": {"$ifNull": ["$tenant", lit(old.get("tenant"))]},
        "status": {"$ifNull": ["$status", lit(old.get("status", "open"))]},
        "created_at": {"$ifNull": ["$created_at", lit(old.get("created_at"))]},
        "unread_wamids": {
            "$setUnion": [{"$ifNull": ["$unread_wamids", []]}, lit(old.get("unread_wamids") or [])]
        },
    }
    second: dict[str, Any] = {}
    if old.get("last_message_at") is not None:
        at, wamid = old["last_message_at"], old.get("last_message_wamid") or ""
        first["_newer"] = newer(at, wamid)
        for field, value in (
            ("last_message_at", at),
            ("last_message_wamid", wamid),
            ("last_message_preview", old.get("last_message_preview")),
        ):
            second[field] = {"$cond": ["$_newer", lit(value), f"${field}"]}
    if old.get("last_inbound_at") is not None:
        second["last_inbound_at"] = {"$max": ["$last_inbound_at", lit(old["last_inbound_at"])]}
    stages: list[dict[str, Any]] = [{"$set": first}]
    if second:
        stages.append({"$set": second})
    if "_newer" in first:
        stages.append({"$unset": "_newer"})
    return stages


async def migrate_contacts(db: Database) -> None:
    """Migration 2's data step: contacts and conversations as this module keeps them.

    Idempotent, and it deletes nothing: (1) every contact gets the ``conversation_id`` its
    conversation already has (derived from the key older code used); (2) a BSUID that older
    code stored as ``wa_id`` moves to ``user_id``; (3) contacts older code created twice for
    one person (by phone and by BSUID) are merged, the older surviving, the younger's
    conversation folded in and kept as an alias; (4) every conversation names its contact and
    shows its identifiers.
    """
    contacts = db[CONTACTS]
    async for doc in contacts.find({"conversation_id": {"$exists": False}}):
        key = doc.get("wa_id") or doc.get("user_id")
        if key:
            await contacts.update_one(
                {"_id": doc["_id"], "conversation_id": {"$exists": False}},
                {"$set": {"conversation_id": conversation_id(doc["channel_id"], key)}},
            )
    async for doc in contacts.find({"wa_id": {"$regex": BSUID.pattern}}):
        update: dict[str, Any] = {"$unset": {"wa_id": ""}}
        if not doc.get("user_id"):
            update["$set"] = {"user_id": doc["wa_id"]}
        elif doc["user_id"] != doc["wa_id"]:
            continue  # two different BSUIDs: leave it for a person to look at
        await contacts.update_one({"_id": doc["_id"]}, update)
    identities = Identities(db)
    groups: dict[tuple[Any, str], list[Document]] = {}
    async for doc in contacts.find(
        {"user_id": {"$exists": True}, "merged_into": {"$exists": False}}
    ):
        groups.setdefault((doc["channel_id"], doc["user_id"]), []).append(doc)
    for docs in groups.values():
        ordered = sorted(docs, key=_age)
        for loser in ordered[1:]:
            await identities.merge(ordered[0], loser)
    async for doc in contacts.find({"merged_into": {"$exists": False}}):
        await identities.show(doc)


def _age(doc: Document) -> tuple[datetime, ObjectId]:
    return (doc.get("created_at") or datetime.min.replace(tzinfo=UTC), doc["_id"])
