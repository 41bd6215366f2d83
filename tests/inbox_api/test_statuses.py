"""The status rule as a pure function: a status only moves forward, whatever the order."""

from __future__ import annotations

import functools
import itertools

import pytest

from inbox_api.consumer.statuses import STATUS_RANK, rank, resolve


def _fold(statuses: tuple[str, ...], start: str | None = None) -> str | None:
    return functools.reduce(resolve, statuses, start)


def test_ranks_are_ordered_as_the_design_says() -> None:
    order = sorted(STATUS_RANK, key=STATUS_RANK.__getitem__)

    assert order == ["pending", "sent", "failed", "delivered", "read"]


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (None, "sent", "sent"),
        ("pending", "sent", "sent"),
        ("sent", "delivered", "delivered"),
        ("delivered", "read", "read"),
        ("read", "delivered", "read"),
        ("read", "sent", "read"),
        ("delivered", "sent", "delivered"),
        ("sent", "failed", "failed"),
        ("pending", "failed", "failed"),
        ("delivered", "failed", "delivered"),
        ("read", "failed", "read"),
        ("failed", "delivered", "delivered"),
        ("failed", "read", "read"),
        ("failed", "sent", "failed"),
        ("sent", "sent", "sent"),
    ],
)
def test_resolve(current: str | None, incoming: str, expected: str) -> None:
    assert resolve(current, incoming) == expected


@pytest.mark.parametrize("current", [None, "sent", "read"])
def test_unknown_statuses_never_change_the_status(current: str | None) -> None:
    assert rank("deleted") is None
    assert resolve(current, "deleted") == current
    assert resolve(current, "warning") == current


def test_an_unknown_current_status_is_replaced_by_a_known_one() -> None:
    assert resolve("deleted", "sent") == "sent"


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("sent", "delivered", "read", "failed"), "read"),
        (("sent", "delivered", "read"), "read"),
        (("sent", "delivered", "failed"), "delivered"),
        (("sent", "failed"), "failed"),
        (("sent", "failed", "read"), "read"),
        (("pending", "sent"), "sent"),
    ],
)
def test_every_arrival_order_ends_in_the_same_status(
    statuses: tuple[str, ...], expected: str
) -> None:
    for order in itertools.permutations(statuses):
        assert _fold(order) == expected, order


def test_the_status_never_moves_backwards() -> None:
    for order in itertools.permutations(STATUS_RANK):
        current: str | None = None
        for incoming in order:
            new = resolve(current, incoming)
            assert new is not None
            if current is not None:
                assert STATUS_RANK[new] >= STATUS_RANK[current], order
            current = new
        assert current == "read", order
