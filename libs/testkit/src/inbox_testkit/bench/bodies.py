"""The benchmark's request bodies: unique, realistic text-message webhooks, pre-signed.

They are written once per run to a tab-separated file, one ``<signature>\\t<body>`` line
each (a compact JSON body never contains a raw tab or newline), which the wrk Lua script,
the Python load generator and the raw publisher all read.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from inbox_common.whatsapp.signature import sign
from inbox_sandbox.payloads import new_wamid, text_webhook

_WORDS = (
    "hello",
    "hi",
    "thanks",
    "order",
    "delivery",
    "status",
    "tomorrow",
    "today",
    "please",
    "invoice",
    "refund",
    "size",
    "colour",
    "available",
    "price",
    "discount",
    "store",
    "open",
    "closed",
    "address",
    "parcel",
    "tracking",
    "number",
    "weekend",
    "appointment",
    "confirm",
    "cancel",
    "change",
    "booking",
    "payment",
    "card",
    "cash",
    "receipt",
)
_NAMES = ("Ana Souza", "John Smith", "Priya Patel", "Wei Chen", "Fatima Zahra", "Luca Rossi")


def make(count: int, secret: bytes, *, seed: int = 7) -> list[tuple[str, bytes]]:
    """``count`` (signature header, body) pairs; every body carries its own wamid."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        wa_id = f"55{rng.randrange(10**10, 10**11)}"
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 22)))
        body = json.dumps(
            text_webhook(
                "106540352242922",
                wa_id,
                _NAMES[i % len(_NAMES)],
                text.capitalize() + "?",
                wamid=new_wamid(),
                timestamp=1_700_000_000 + i,
            )
        ).encode()
        out.append((sign(secret, body), body))
    return out


def conversation_bodies(
    phone_number_id: str, contacts: int, per_contact: int, *, seed: int = 11
) -> list[bytes]:
    """``contacts * per_contact`` unique text-message webhooks to ``phone_number_id``.

    Event ``k`` comes from contact ``k % contacts`` (so consecutive events touch different
    conversations, as concurrent users do); each carries its own wamid.
    """
    rng = random.Random(seed)
    wa_ids = [f"49{1_500_000_000 + i}" for i in range(contacts)]
    out: list[bytes] = []
    for k in range(contacts * per_contact):
        contact = k % contacts
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(2, 22)))
        body = text_webhook(
            phone_number_id,
            wa_ids[contact],
            _NAMES[contact % len(_NAMES)],
            text.capitalize() + ".",
            wamid=new_wamid(),
            timestamp=1_700_000_000 + k // contacts,
        )
        out.append(json.dumps(body).encode())
    return out


def write(path: Path, pairs: list[tuple[str, bytes]]) -> None:
    with path.open("wb") as fh:
        for signature, body in pairs:
            fh.write(signature.encode() + b"\t" + body + b"\n")


def read(path: Path) -> list[tuple[str, bytes]]:
    pairs: list[tuple[str, bytes]] = []
    with path.open("rb") as fh:
        for line in fh:
            signature, _, body = line.rstrip(b"\n").partition(b"\t")
            pairs.append((signature.decode(), body))
    return pairs


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
