from __future__ import annotations

import pytest

from inbox_common.whatsapp.signature import SIGNATURE_HEADER, sign, verify

SECRET = b"app-secret-one"
OTHER_SECRET = b"app-secret-two"
BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def test_header_name() -> None:
    assert SIGNATURE_HEADER == "X-Hub-Signature-256"


def test_sign_matches_a_known_digest() -> None:
    # From: printf '%s' "$BODY" | openssl dgst -sha256 -hmac app-secret-one
    expected = "b9d243a310a3c4f330e6df0dda217ae66d995edb0ef43a785e4f238db8c62f0c"

    assert sign(SECRET, BODY) == "sha256=" + expected


def test_round_trip() -> None:
    assert verify(BODY, sign(SECRET, BODY), [SECRET])


def test_wrong_secret() -> None:
    assert not verify(BODY, sign(OTHER_SECRET, BODY), [SECRET])


def test_tampered_body() -> None:
    header = sign(SECRET, BODY)
    tampered = bytes([BODY[0] ^ 0x01]) + BODY[1:]

    assert not verify(tampered, header, [SECRET])
    assert not verify(BODY + b" ", header, [SECRET])


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header: str | None) -> None:
    assert not verify(BODY, header, [SECRET])


def test_wrong_prefix() -> None:
    digest = sign(SECRET, BODY).removeprefix("sha256=")

    assert not verify(BODY, "sha1=" + digest, [SECRET])
    assert not verify(BODY, digest, [SECRET])
    assert not verify(BODY, "SHA256=" + digest, [SECRET])


@pytest.mark.parametrize(
    "digest",
    [
        "z" * 64,
        "abc",
        "0" * 63,
        "0" * 65,
        "０" * 64,  # noqa: RUF001 - full-width digits must not pass as hex
        " " + "0" * 63,
    ],
)
def test_non_hex_digest(digest: str) -> None:
    assert not verify(BODY, "sha256=" + digest, [SECRET])


def test_trailing_newline_is_rejected() -> None:
    assert not verify(BODY, sign(SECRET, BODY) + "\n", [SECRET])


def test_uppercase_hex_verifies() -> None:
    digest = sign(SECRET, BODY).removeprefix("sha256=")

    assert verify(BODY, "sha256=" + digest.upper(), [SECRET])


def test_rotation_accepts_either_secret() -> None:
    secrets = [SECRET, OTHER_SECRET]

    assert verify(BODY, sign(SECRET, BODY), secrets)
    assert verify(BODY, sign(OTHER_SECRET, BODY), secrets)
    assert not verify(BODY, sign(b"retired-secret", BODY), secrets)


def test_empty_body() -> None:
    assert verify(b"", sign(SECRET, b""), [SECRET])
    assert not verify(b"", sign(SECRET, BODY), [SECRET])


def test_no_secrets_or_empty_secret_never_verify() -> None:
    assert not verify(BODY, sign(SECRET, BODY), [])
    assert not verify(BODY, sign(b"", BODY), [b""])
