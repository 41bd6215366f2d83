"""The body of ``POST /api/conversations/{id}/messages``: what an agent sends, in Meta's own
request shapes (``type`` and the object it names), so a frontend can reuse Meta's docs."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

MEDIA = ("image", "video", "audio", "document", "sticker")
OutgoingType = Literal[
    "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
    "template", "interactive", "reaction",
]  # fmt: skip
TYPES: tuple[str, ...] = get_args(OutgoingType)


class _Object(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextBody(_Object):
    body: str = Field(min_length=1, max_length=4096)
    preview_url: bool = False


class MediaBody(_Object):
    """Media by a public ``link`` (https) or a Meta media ``id``."""

    link: HttpUrl | None = None
    id: str | None = Field(default=None, min_length=1, max_length=128)
    caption: str | None = Field(default=None, max_length=1024)
    filename: str | None = Field(default=None, max_length=240)

    @model_validator(mode="after")
    def _one_source(self) -> MediaBody:
        if (self.link is None) == (self.id is None):
            raise ValueError("give the media as either link or id")
        return self


class LocationBody(_Object):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = Field(default=None, max_length=1000)
    address: str | None = Field(default=None, max_length=1000)


class TemplateLanguage(_Object):
    code: str = Field(min_length=2, max_length=15, examples=["en_US", "id"])


class TemplateBody(_Object):
    name: str = Field(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")
    language: TemplateLanguage
    components: list[dict[str, Any]] = Field(
        default_factory=list, description="Meta's components with their parameters"
    )


class ReactionBody(_Object):
    message_id: str = Field(min_length=1, max_length=256, description="the wamid reacted to")
    emoji: str = Field(max_length=16, description="empty to remove the reaction")


class OutgoingMessage(_Object):
    """One message: ``type`` names the object that carries it."""

    type: OutgoingType
    text: TextBody | None = None
    image: MediaBody | None = None
    video: MediaBody | None = None
    audio: MediaBody | None = None
    document: MediaBody | None = None
    sticker: MediaBody | None = None
    location: LocationBody | None = None
    contacts: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=20)
    template: TemplateBody | None = None
    interactive: dict[str, Any] | None = Field(
        default=None, description="Meta's interactive object (button, list, cta_url...)"
    )
    reaction: ReactionBody | None = None
    reply_to: str | None = Field(
        default=None, max_length=256, description="the wamid this message answers"
    )

    @model_validator(mode="after")
    def _one_object(self) -> OutgoingMessage:
        given = [name for name in TYPES if getattr(self, name) is not None]
        if given != [self.type]:
            raise ValueError(
                f"a message of type {self.type!r} carries exactly the object {self.type!r} "
                f"(found: {', '.join(given) or 'none'})"
            )
        if self.type == "interactive":
            kind = (self.interactive or {}).get("type")
            if not isinstance(kind, str):
                raise ValueError("interactive.type is required (button, list, cta_url...)")
        return self

    def content(self) -> dict[str, Any] | list[dict[str, Any]]:
        """Meta's object for this type, as it is sent."""
        value: object = getattr(self, self.type)
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", exclude_none=True)
        if isinstance(value, dict | list):
            return value
        raise AssertionError(f"no {self.type} object")  # the validator prevents it
