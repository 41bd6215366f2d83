"""Channel access tokens at rest: encrypted with keys from ``CHANNEL_TOKEN_KEYS``.

The keys are Fernet keys (AES-128-CBC with an HMAC-SHA256, from ``cryptography``),
comma-separated: the first encrypts, every one decrypts (``MultiFernet``), so keys rotate
without downtime: add the new key first, re-encrypt (``Channels.rotate_tokens``), then drop
the old one. A stored token reads ``fernet:<token>``; a value without the prefix is a token
stored before encryption, read as it is and re-encrypted by the next write of its channel.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings

from inbox_common.settings import SETTINGS_CONFIG

PREFIX = "fernet:"


class TokenCipherError(ValueError):
    """A stored token that no configured key decrypts (a key was dropped too early)."""


class TokenCipher:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @staticmethod
    def new_key() -> str:
        """A fresh key, for ``CHANNEL_TOKEN_KEYS``."""
        return Fernet.generate_key().decode()

    def encrypt(self, token: str) -> str:
        return PREFIX + self._fernet.encrypt(token.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            return stored  # stored before encryption
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise TokenCipherError(
                "no key in CHANNEL_TOKEN_KEYS decrypts this channel's token: keep the key it "
                "was encrypted with in the list (first the new key, then the old ones)"
            ) from None

    def rotate(self, stored: str) -> str:
        """``stored`` encrypted with the first key (plain tokens get encrypted)."""
        if not stored.startswith(PREFIX):
            return self.encrypt(stored)
        try:
            return PREFIX + self._fernet.rotate(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise TokenCipherError(
                "no key in CHANNEL_TOKEN_KEYS decrypts a stored channel token: keep the key it "
                "was encrypted with in the list (first the new key, then the old ones) and "
                "rotate again"
            ) from None

    @staticmethod
    def needs_rotation(stored: str) -> bool:
        return not stored.startswith(PREFIX)


class TokenCipherSettings(BaseSettings):
    model_config = SETTINGS_CONFIG

    channel_token_keys: SecretStr = Field(
        description="Fernet keys, comma-separated (the first encrypts, all decrypt); make one "
        "with `inbox-ops channels new-key`"
    )

    @field_validator("channel_token_keys")
    @classmethod
    def _valid_keys(cls, value: SecretStr) -> SecretStr:
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise ValueError("must hold at least one key")
        for key in keys:
            try:
                Fernet(key.encode())
            except ValueError:
                raise ValueError(
                    "each key must be 32 url-safe base64-encoded bytes (a Fernet key)"
                ) from None
        return value

    def token_cipher(self) -> TokenCipher:
        keys = self.channel_token_keys.get_secret_value().split(",")
        return TokenCipher([k.strip().encode() for k in keys if k.strip()])
