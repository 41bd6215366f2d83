"""``channel_health``: for every connected channel, its token against the Cloud API and how
long Meta has been silent for its number.

- **The token**: ``GET /{phone_number_id}`` with the channel's token
  (:meth:`CloudApiClient.phone_number`). A code that stops the channel (190: the token
  expired or was revoked; 368, 131048, 131031) disconnects it with Meta's reason
  (:meth:`Channels.disconnect`: its sends are held until it is reconnected) and raises the
  P2 ``channel_disconnected`` alert. Another refusal (a wrong phone number id for the token)
  raises ``channel_check_failed``. A transient failure leaves the channel's alerts as they are:
  nothing was learnt.
- **The silence**: no webhook naming the number for ``quiet_after``. If Meta accepted sends
  from the number meanwhile (each of which should have brought status webhooks), webhooks
  are not reaching us: P2 ``channel_webhooks_missing``; otherwise the number is just quiet:
  P3 ``channel_quiet``.

The alerts of these kinds that no longer hold are resolved (a disconnected channel is no
longer checked, so its quiet alert goes too; ``channel_disconnected`` itself is resolved by
the alert evaluation once the channel is connected again).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from inbox_common.alerts import AlertKind, Alerts, Finding, dedupe_key
from inbox_common.store.activity import last_webhook_at
from inbox_common.store.channels import Channels
from inbox_common.store.client import Database, Document
from inbox_common.store.collections import CHANNELS, MESSAGES
from inbox_common.store.outbound import ACCEPTED
from inbox_common.store.token_cipher import TokenCipherError
from inbox_common.whatsapp.cloud_api import CloudApiClient
from inbox_common.whatsapp.errors import Classification, CloudApiError
from inbox_maintenance.tasks.context import TaskContext, TaskFailedError, TaskResult

KINDS = (
    AlertKind.CHANNEL_QUIET,
    AlertKind.CHANNEL_WEBHOOKS_MISSING,
    AlertKind.CHANNEL_CHECK_FAILED,
)
# Meta sends a "sent" status within seconds of accepting a message; minutes is generous.
STATUS_GRACE = timedelta(minutes=10)


class ChannelHealth:
    name = "channel_health"
    needs_broker = False

    def __init__(
        self,
        db: Database,
        alerts: Alerts,
        channels: Channels,
        cloud_api: CloudApiClient | None,
        *,
        quiet_after: timedelta,
    ) -> None:
        self._db = db
        self._alerts = alerts
        self._channels = channels
        self._cloud_api = cloud_api
        self._quiet_after = quiet_after

    async def run(self, ctx: TaskContext) -> TaskResult:
        if self._cloud_api is None:
            raise TaskFailedError("channel_health needs the Cloud API client")
        connected = await self._db[CHANNELS].find({"status": "connected"}).to_list()
        findings: list[Finding] = []
        unknown: set[str] = set()
        disconnected = 0
        for channel in connected:
            await ctx.checkpoint()
            verdict = await self._check_token(channel)
            if verdict == "disconnected":
                disconnected += 1
                ctx.say(f"{channel['phone_number_id']}: disconnected (token refused)")
                continue
            if isinstance(verdict, Finding):
                findings.append(verdict)
            elif verdict == "unknown":
                unknown.add(_key(AlertKind.CHANNEL_CHECK_FAILED, channel))
            silence = await self._silence(channel)
            if silence is not None:
                findings.append(silence)
            ctx.say(f"{channel['phone_number_id']}: checked")
        done = await self._alerts.reconcile(
            KINDS, findings, keep=unknown, by="maintenance:channel_health"
        )
        quiet = sum(f.kind is AlertKind.CHANNEL_QUIET for f in findings)
        missing = sum(f.kind is AlertKind.CHANNEL_WEBHOOKS_MISSING for f in findings)
        refused = sum(f.kind is AlertKind.CHANNEL_CHECK_FAILED for f in findings)
        return TaskResult(
            f"{len(connected)} connected channels: {disconnected} disconnected (token "
            f"refused), {refused} refused otherwise, {len(unknown)} not checkable now, "
            f"{quiet} quiet, {missing} without webhooks; {len(done.resolved)} alerts resolved",
            {
                "channels": len(connected),
                "disconnected": disconnected,
                "refused": refused,
                "unknown": len(unknown),
                "quiet": quiet,
                "webhooks_missing": missing,
                "resolved": len(done.resolved),
            },
        )

    async def _check_token(self, channel: Document) -> Finding | str | None:
        """None (the token works), ``disconnected``, ``unknown`` (transient), or a finding."""
        assert self._cloud_api is not None
        number = channel["phone_number_id"]
        try:
            token = self._channels.access_token(channel)
            await self._cloud_api.phone_number(number, token)
        except TokenCipherError as exc:
            return _finding(AlertKind.CHANNEL_CHECK_FAILED, channel, str(exc), {})
        except CloudApiError as error:
            evidence = {
                "code": error.code,
                "reason": error.reason,
                "http_status": error.http_status,
                "fbtrace_id": error.fbtrace_id,
                "details": error.details,
            }
            if error.classification is Classification.STOP_CHANNEL:
                await self._disconnect(channel, error, evidence)
                return "disconnected"
            if error.classification is Classification.RETRY:
                return "unknown"
            return _finding(AlertKind.CHANNEL_CHECK_FAILED, channel, str(error), evidence)
        return None

    async def _disconnect(
        self, channel: Document, error: CloudApiError, evidence: dict[str, Any]
    ) -> None:
        reason = f"{error.reason}: {error}"[:500]
        await self._channels.disconnect(channel["_id"], reason=reason, code=error.code)
        await self._alerts.raise_alert(
            AlertKind.CHANNEL_DISCONNECTED,
            title=f"channel {channel['phone_number_id']} ({channel.get('name', '')}) was "
            f"disconnected: {reason}",
            subject=str(channel["_id"]),
            tenant=channel["tenant"],
            evidence={**_channel_evidence(channel), **evidence, "disconnected_by": "token check"},
        )

    async def _silence(self, channel: Document) -> Finding | None:
        now = datetime.now(UTC)
        last = await last_webhook_at(self._db, channel["phone_number_id"])
        since = last or channel.get("reconnected_at") or channel.get("created_at") or now
        if since > now - self._quiet_after:
            return None
        sent = await self._db[MESSAGES].count_documents(
            {
                "channel_id": channel["_id"],
                "send_state": ACCEPTED,
                "accepted_at": {"$gt": since, "$lt": now - STATUS_GRACE},
            },
            limit=1,
        )
        hours = (now - since).total_seconds() / 3600
        evidence = {
            "last_webhook_at": last,
            "silent_hours": round(hours, 1),
            "quiet_after_hours": self._quiet_after.total_seconds() / 3600,
        }
        heard = "no webhook ever" if last is None else f"no webhook for {hours:.1f} hours"
        if sent:
            return _finding(
                AlertKind.CHANNEL_WEBHOOKS_MISSING,
                channel,
                f"{heard}, although Meta accepted messages sent from it since: check the "
                "webhook subscription, WHATSAPP_WEBHOOK_SECRET and the ingest",
                evidence,
            )
        return _finding(AlertKind.CHANNEL_QUIET, channel, heard, evidence)


def _key(kind: AlertKind, channel: Document) -> str:
    return dedupe_key(kind, channel["tenant"], str(channel["_id"]))


def _channel_evidence(channel: Document) -> dict[str, Any]:
    return {
        "channel_id": str(channel["_id"]),
        "phone_number_id": channel["phone_number_id"],
        "name": channel.get("name"),
    }


def _finding(kind: AlertKind, channel: Document, what: str, evidence: dict[str, Any]) -> Finding:
    return Finding(
        kind,
        title=f"channel {channel['phone_number_id']} ({channel.get('name', '')}): {what}",
        subject=str(channel["_id"]),
        tenant=channel["tenant"],
        evidence={**_channel_evidence(channel), **evidence},
    )
