"""The WhatsApp users each business number has heard from, and their service windows.

A user is known by a phone number (``wa_id``), a business-scoped user id (BSUID, ``user_id``)
or both; a user with a username may share only the BSUID. Every inbound message opens (or
re-opens) the 24-hour customer service window of that user with that business number: while
it is open any message may be sent, after it only templates (131047 otherwise).

A user the sandbox never heard from gets the BSUID ``US.<wa_id>``, the same one
``payloads.contact`` gives, so the ids in status webhooks agree with the tests' own bodies.
The registry is bounded: the least recently seen user is forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_CUSTOMERS", "Customer", "Customers", "derived_bsuid"]

MAX_CUSTOMERS = 100_000


def derived_bsuid(wa_id: str) -> str:
    """The BSUID of a phone number the sandbox has no BSUID for."""
    return f"US.{wa_id}"


@dataclass(slots=True)
class Customer:
    """A WhatsApp user as one business number knows them."""

    user_id: str
    wa_id: str | None = None
    name: str | None = None
    username: str | None = None
    last_inbound: float | None = None


class Customers:
    """Users by ``(phone_number_id, wa_id)`` and by ``(phone_number_id, user_id)``."""

    def __init__(
        self,
        *,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = MAX_CUSTOMERS,
    ) -> None:
        self._window = window_seconds
        self._clock = clock
        self._capacity = capacity
        self._by_user: OrderedDict[tuple[str, str], Customer] = OrderedDict()
        self._by_phone: dict[tuple[str, str], Customer] = {}

    def find(
        self, phone_number_id: str, *, wa_id: str | None = None, user_id: str | None = None
    ) -> Customer | None:
        """The user with this phone number, else the one with this BSUID."""
        if wa_id is not None and (known := self._by_phone.get((phone_number_id, wa_id))):
            return known
        if user_id is not None:
            return self._by_user.get((phone_number_id, user_id))
        return None

    def wrote(
        self,
        phone_number_id: str,
        *,
        wa_id: str | None,
        user_id: str | None,
        name: str | None,
        username: str | None,
    ) -> Customer:
        """Record an inbound message from this user: learn their ids and open the window."""
        customer = self.find(phone_number_id, wa_id=wa_id, user_id=user_id)
        if customer is None:
            bsuid = user_id or derived_bsuid(wa_id or "")
            customer = Customer(user_id=bsuid)
        if user_id is not None and user_id != customer.user_id:
            # A new BSUID (the user changed phone number): the old one no longer reaches them.
            self._by_user.pop((phone_number_id, customer.user_id), None)
            customer.user_id = user_id
        if wa_id is not None:
            customer.wa_id = wa_id
            self._by_phone[(phone_number_id, wa_id)] = customer
        customer.name = name or customer.name
        customer.username = username or customer.username
        customer.last_inbound = self._clock()
        key = (phone_number_id, customer.user_id)
        self._by_user[key] = customer
        self._by_user.move_to_end(key)
        while len(self._by_user) > self._capacity:
            (number, _), forgotten = self._by_user.popitem(last=False)
            if forgotten.wa_id is not None:
                self._by_phone.pop((number, forgotten.wa_id), None)
        return customer

    def window_open(self, customer: Customer | None) -> bool:
        """Whether the user wrote within the window (any message may be sent to them)."""
        if customer is None or customer.last_inbound is None:
            return False
        return self._clock() - customer.last_inbound < self._window
