"""``inbox-ops dead-letters list|replay``: what waits in the namespace's ``.dead`` queues, and
moving it back to the work queue it came from.

**Which queues.** The dead-letter queue of every work queue of the namespace, each channel's
number queue included (the numbers come from the store, as the ``dead_letters`` maintenance
task reads them; without the store only the fixed ones are known, and ``--queue`` names any).
Their depths come from passive declares, which change nothing.

**Where a message goes back: the dead queue's name less ``.dead``.** Each work queue
dead-letters through ``<ns>.dlx`` with its own name as the routing key, bound to its own
``.dead`` queue only, so the name is always right. The ``x-inbox-source-queue`` header is not:
a send that waited in a delay tier carries its number queue's name into
``<ns>.retry.due.dead``, where moving it straight to the number queue would skip the
retry-worker's decision.

**Reading a message is moving it.** A message taken with ``basic.get`` and handed back
(``nack`` with requeue, or its channel closed) counts as a failed delivery on RabbitMQ 4.0 to
4.2, whose quorum queues drop a message past their default delivery limit of 20; the
``.dead`` queues set no limit and no dead-letter exchange of their own. So a message read is
never handed back: a confirmed publish of it (the same body, ``message_id``, content type,
timestamp and headers, less the broker's delivery count) goes to the tail of its own dead
queue when it stays, or to its work queue when it moves, and only then is the original acked.
A message is therefore moved once; a crash between the publish and the ack leaves one
duplicate, never a loss, and the work queues' consumers are idempotent (the webhook ledger,
the sender's compare-and-set). A copy that stays keeps its ``x-death`` record; a copy that
moves starts afresh, without it and without its ``x-inbox-dead-letter-reason``, so a new death
says its own reason.

**Bounded.** A run reads at most the messages a queue held when the run began, so a message
that fails again and comes back to the dead queue is not read twice; ``list`` reads at most
``--sample`` of them. Run one of these commands at a time per namespace.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from pymongo.errors import PyMongoError

from inbox_common.broker.connection import Broker, BrokerUnavailableError
from inbox_common.broker.consumer import REASON_HEADER
from inbox_common.broker.headers import republished_headers
from inbox_common.broker.publisher import ConfirmedPublisher, PublishFailedError
from inbox_common.broker.topology import PIECES, Names
from inbox_common.logging import configure_logging, get_logger
from inbox_common.settings import load_settings, redact_url
from inbox_common.store.client import create_client
from inbox_common.store.collections import CHANNELS
from inbox_ops.observe import BROKER_ERRORS, all_queues, queue_states
from inbox_ops.report import Redactor, table
from inbox_ops.settings import OpsSettings

log = get_logger(__name__)

DEAD = ".dead"
DEFAULT_SAMPLE = 1000
GET_SECONDS = 5.0
BROKER_SECONDS = 10.0
EXIT_INCOMPLETE = 1  # a message could not be moved (the rest of its queue stays)
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  # RabbitMQ is unreachable


@dataclass(slots=True)
class DeadQueue:
    """One dead-letter queue and what a run did with it: ``messages`` when the run began,
    ``read`` of them, by reason code (``reasons``, with one full reason each in
    ``examples``); of those read, ``matched`` a replay's reason, ``moved`` to ``source``,
    ``kept`` at the tail of the queue; and what stopped it (``error``)."""

    queue: str
    source: str
    declared: bool = True
    messages: int = 0
    read: int = 0
    matched: int = 0
    moved: int = 0
    kept: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def note(self, reason: str) -> None:
        code = reason_code(reason)
        self.reasons[code] += 1
        self.examples.setdefault(code, reason[:300])

    def document(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "source_queue": self.source,
            "declared": self.declared,
            "messages": self.messages,
            "read": self.read,
            "matched": self.matched,
            "moved": self.moved,
            "kept": self.kept,
            "reasons": {
                code: {"count": n, "example": self.examples[code]}
                for code, n in self.reasons.most_common()
            },
            "error": self.error,
        }


def reason_of(headers: dict[str, Any] | None) -> str:
    """Why a message is dead: the consumer's ``x-inbox-dead-letter-reason`` (``<code>: <text>``),
    else what RabbitMQ's newest ``x-death`` record says (``delivery_limit``, ``rejected``...)."""
    values = headers or {}
    given = _text(values.get(REASON_HEADER))
    if given:
        return given
    deaths = values.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        newest = deaths[0]
        why = _text(newest.get("reason")) or "unknown"
        return f"{why}: dead-lettered by RabbitMQ from {_text(newest.get('queue')) or '?'}"
    return "unknown: no x-inbox-dead-letter-reason or x-death header"


def reason_code(reason: str) -> str:
    """The reason's code: what comes before its first colon."""
    return reason.split(":", 1)[0].strip() or "unknown"


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def work_queues(names: Names) -> frozenset[str]:
    """The work queues of the namespace but the number queues (``Names.is_number_queue``)."""
    return frozenset(q for piece in PIECES if (q := piece(names).consumed) is not None)


def source_of(names: Names, queue: str) -> str | None:
    """The work queue ``queue`` is the dead-letter queue of; None when it is none of the
    namespace's."""
    source = queue.removesuffix(DEAD)
    if source == queue:
        return None
    if source in work_queues(names) or names.is_number_queue(source):
        return source
    return None


class DeadLetters:
    """Reads and moves the messages of dead-letter queues (see the module docstring)."""

    def __init__(self, broker: Broker, publisher: ConfirmedPublisher, names: Names) -> None:
        self._broker = broker
        self._publisher = publisher
        self._names = names

    async def sweep(
        self,
        dead: DeadQueue,
        *,
        read_at_most: int,
        matches: Callable[[str], bool] | None = None,
        move: bool = False,
        move_at_most: int | None = None,
    ) -> None:
        """Read up to ``read_at_most`` of the messages ``dead`` held when the run began. Those
        whose reason ``matches`` accepts (at most ``move_at_most``) are moved to their work
        queue when ``move`` is set; every other message read is put back at the tail. Stops
        at the first publish the broker refuses (``dead.error``)."""
        bound = min(dead.messages, read_at_most)
        channel = await self._broker.connection.channel()
        try:
            queue = await channel.get_queue(dead.queue, ensure=False)
            while dead.read < bound and (move_at_most is None or dead.matched < move_at_most):
                message = await queue.get(no_ack=False, fail=False, timeout=GET_SECONDS)
                if message is None:
                    break
                dead.read += 1
                reason = reason_of(message.headers)
                dead.note(reason)
                matched = matches is not None and matches(reason)
                dead.matched += matched
                if not await self._settle(dead, message, reason, move=move and matched):
                    break
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _settle(
        self, dead: DeadQueue, message: AbstractIncomingMessage, reason: str, *, move: bool
    ) -> bool:
        """Publish the message where it goes (confirmed), then ack it; False when the broker
        refused the publish (the message is handed back, once)."""
        target = dead.source if move else dead.queue
        headers = (
            republished_headers(message.headers, drop=(REASON_HEADER,))
            if move
            else republished_headers(message.headers, keep_deaths=True)
        )
        try:
            # The default exchange routes by queue name.
            await self._publisher.publish(
                "",
                target,
                message.body,
                message_id=message.message_id,
                headers=headers,
                content_type=message.content_type,
                timestamp=message.timestamp,
            )
        except PublishFailedError as exc:
            await message.nack(requeue=True)
            missing = " (no such queue)" if exc.reason == "returned" else ""
            dead.error = f"publishing to {target} failed{missing}: {exc}"
            log.warning("dead_letters.publish_failed", queue=dead.queue, to=target, error=str(exc))
            return False
        await message.ack()
        if not move:
            dead.kept += 1
            return True
        dead.moved += 1
        log.info(
            "dead_letters.moved",
            queue=dead.queue,
            to=target,
            message_id=message.message_id,
            reason=reason_code(reason),
        )
        return True


# --- the commands ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterRequest:
    """What ``dead-letters list`` or ``dead-letters replay`` was asked."""

    dead_letters_command: str  # "list" or "replay"
    queue: str | None = None
    json: bool = False
    sample: int = DEFAULT_SAMPLE
    reason: str | None = None
    limit: int | None = None
    dry_run: bool = False


def run_dead_letters(args: DeadLetterRequest) -> int:
    """``dead-letters list|replay``: the exit status (0 done, 1 a message could not be moved,
    2 a wrong argument, 3 RabbitMQ unreachable)."""
    settings = load_settings(OpsSettings)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)
    names = Names(settings.amqp_namespace, settings.amqp_delivery_limit)
    if args.queue is not None and source_of(names, args.queue) is None:
        print(
            f"inbox-ops dead-letters: --queue {args.queue[:200]!r} is not a dead-letter queue of "
            f"namespace {names.namespace!r}: name one of "
            f"{', '.join(sorted(q + DEAD for q in work_queues(names)))}, or "
            f"{names.number_queue('<phone_number_id>')}{DEAD}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, settings, names))
    except (BrokerUnavailableError, *BROKER_ERRORS) as exc:
        # Whatever was not acked yet went back to its queue with the connection.
        what = Redactor.of_environment()(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
        print(
            f"inbox-ops dead-letters: RabbitMQ at {redact_url(settings.rabbitmq_url)} failed: "
            f"{what}; check RABBITMQ_URL and that the broker is running, then run it again",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE


async def _run(args: DeadLetterRequest, settings: OpsSettings, names: Names) -> int:
    if args.queue is not None:
        queues = [args.queue]
    else:
        queues = await _namespace_dead_queues(settings, names)
    states = await queue_states(settings.rabbitmq_url, queues, seconds=BROKER_SECONDS)
    found = [
        DeadQueue(q, q.removesuffix(DEAD), states[q].declared, states[q].messages) for q in queues
    ]
    replay = args.dead_letters_command == "replay"
    reason: str | None = args.reason if replay else None
    if replay and args.dry_run and reason is None:
        # Every message would move: nothing needs reading.
        for dead in found:
            dead.matched = min(dead.messages, args.limit or dead.messages)
    elif any(d.messages for d in found):
        await _sweep_all(args, settings, names, found, reason)
    if args.json:
        print(_json(names, found, args))
    else:
        print(_text_report(names, found, args))
    return EXIT_INCOMPLETE if any(d.error for d in found) else 0


async def _sweep_all(
    args: DeadLetterRequest,
    settings: OpsSettings,
    names: Names,
    found: Sequence[DeadQueue],
    reason: str | None,
) -> None:
    broker = Broker(settings.rabbitmq_url, name="inbox-ops dead-letters")
    broker.start()
    try:
        await broker.wait_connected(timeout=BROKER_SECONDS)
        publisher = ConfirmedPublisher(broker, timeout=settings.amqp_publish_timeout)
        await publisher.start()
        letters = DeadLetters(broker, publisher, names)
        for dead in found:
            if not dead.messages:
                continue
            if args.dead_letters_command == "list":
                await letters.sweep(dead, read_at_most=args.sample)
            else:
                await letters.sweep(
                    dead,
                    read_at_most=dead.messages,
                    matches=_matcher(reason),
                    move=not args.dry_run,
                    move_at_most=args.limit,
                )
    finally:
        await broker.close()


def _matcher(reason: str | None) -> Callable[[str], bool]:
    if reason is None:
        return lambda _: True
    return lambda text: reason in text


async def _namespace_dead_queues(settings: OpsSettings, names: Names) -> list[str]:
    """Every dead-letter queue of the namespace; the number queues' only when the store
    names the channels (a line on stderr says when it could not)."""
    client = create_client(
        settings.mongodb_url, app_name="inbox-ops", timeout_ms=settings.mongodb_timeout_ms
    )
    try:
        numbers = sorted(await client[settings.mongodb_db][CHANNELS].distinct("phone_number_id"))
    except PyMongoError as exc:
        print(
            f"inbox-ops dead-letters: MongoDB at {redact_url(settings.mongodb_url)} failed "
            f"({type(exc).__name__}): the channels' number queues are not listed; name one with "
            f"--queue {names.number_queue('<phone_number_id>')}{DEAD}",
            file=sys.stderr,
        )
        numbers = []
    finally:
        await client.close()
    return [q for q in all_queues(names, [str(n) for n in numbers]) if q.endswith(DEAD)]


# --- what it prints ---------------------------------------------------------------------------


def _json(names: Names, found: Sequence[DeadQueue], args: DeadLetterRequest) -> str:
    document: dict[str, Any] = {
        "namespace": names.namespace,
        "queues": [d.document() for d in found],
        "messages": sum(d.messages for d in found),
    }
    if args.dead_letters_command == "replay":
        document |= {
            "reason": args.reason,
            "dry_run": args.dry_run,
            "matched": sum(d.matched for d in found),
            "moved": sum(d.moved for d in found),
        }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def _text_report(names: Names, found: Sequence[DeadQueue], args: DeadLetterRequest) -> str:
    replay = args.dead_letters_command == "replay"
    holding = [d for d in found if d.messages]
    total = sum(d.messages for d in found)
    lines = [
        f"namespace {names.namespace}: {len(found)} dead-letter queue(s), {len(holding)} "
        f"holding {total} message(s)"
    ]
    rows = [
        [
            d.queue,
            str(d.messages) if d.declared else "-",
            _outcome(d, args) if replay else d.source,
        ]
        for d in found
    ]
    last = "outcome" if replay else "moves back to"
    lines += ["", table(["queue", "messages", last], rows)]
    for dead in found:
        if dead.reasons:
            read = f"{dead.read} read" if dead.read < dead.messages else "all read"
            lines += ["", f"{dead.queue} ({read}), by reason:"]
            width = max(len(code) for code in dead.reasons)
            lines += [
                f"  {n:>6}  {code.ljust(width)}  e.g. {_detail(dead.examples[code], code)}"
                for code, n in dead.reasons.most_common()
            ]
        if dead.error:
            lines += ["", f"{dead.queue}: stopped: {dead.error}; run it again"]
    if not replay and holding:
        lines += [
            "",
            "Move them back once the cause is fixed: inbox-ops dead-letters replay "
            "[--queue Q] [--reason TEXT] [--dry-run]",
        ]
    if replay and not args.dry_run and any(d.moved for d in found):
        lines += [
            "",
            "A message that fails again comes back to its .dead queue with its new reason: "
            "run dead-letters list again in a minute",
        ]
    return "\n".join(lines)


def _detail(example: str, code: str) -> str:
    """An example reason without its code (the line names it already)."""
    rest = example.removeprefix(code).removeprefix(":").strip()
    return rest or example


def _outcome(dead: DeadQueue, args: DeadLetterRequest) -> str:
    if not dead.declared:
        return "not declared (nothing to move)"
    if not dead.messages:
        return "nothing to move"
    if args.dry_run:
        scope = "" if args.reason is None else f" of {dead.read} read"
        return f"would move {dead.matched}{scope} to {dead.source}"
    return f"moved {dead.moved} to {dead.source}; {dead.messages - dead.moved} left"
