"""The printed report of the agents' side: their replies going out (send) and the live
updates reaching their browsers (live), each against its baseline of the same run."""

from __future__ import annotations

from inbox_testkit.bench.layout import Json, case_table, cpu_text, latency_row, mark, render
from inbox_testkit.bench.live import TARGET_LIVE_P99_MS, TARGET_LIVE_RSS_MB
from inbox_testkit.bench.send import TARGET_SANDBOX_P99_MS, TARGET_SENT_P99_MS

QUEUE_LABELS = {
    "webhooks": "the webhook queue (the status webhooks, for inbox-api's consumer)",
    "sends": "the number's send queue (for the sender)",
}
HEADER = ("measure", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "notes")


@case_table("send", "Send")
def send_table(case: Json) -> list[str]:
    result, base, check = case["result"], case["baseline"], case["verification"]
    span = max(1.0, float(result["duration_s"]))
    reached, visible = result["reached_sandbox_ms"], result["sent_visible_ms"]
    rows: list[tuple[str, ...]] = [
        HEADER,
        latency_row(
            "POST /messages -> 202",
            result["post_latency_ms"],
            f"offered {result['offered_rate']:g}/s, sent {result['sent_rate']:.1f}/s, failed "
            f"POSTs {check['post_failures']}",
        ),
        latency_row(
            "POST -> the sandbox has it",
            reached,
            f"ledger accepted_at - POST start; not there after the drain "
            f"{result['not_reached']} (counted at the time waited)",
        ),
        latency_row(
            "POST -> status sent via GET",
            visible,
            f"{result['tracked']} of {result['contacts']} conversations polled every "
            f"{result['poll_interval_ms']:g} ms while waiting ({result['gets'] / span:.0f} "
            f"GET/s, GET p50 {result['get_latency_ms']['p50']:.1f} ms); not sent after the "
            f"drain {result['sampled_unsent']}, failed {result['sampled_failed']}",
        ),
        latency_row(
            "baseline: POST -> answer",
            base["post_latency_ms"],
            "straight to a sandbox's Graph endpoint (the Cloud API's own round trip)",
        ),
        latency_row(
            "baseline: POST -> has it", base["reached_sandbox_ms"], "its ledger's accepted_at"
        ),
    ]
    bound = ">= " if result["sampled_unsent"] else ""
    reached_bound = ">= " if result["not_reached"] else ""
    ratios = case["ratios"]
    breakdown = result.get("api_breakdown", {})
    post, job = breakdown.get("post_handler", {}), breakdown.get("sender_job", {})
    lines = [
        f"Send: agents' texts through inbox-api to the sandbox ({result['duration_s']:.0f}s "
        f"over {result['contacts']} conversations; the sandbox's statuses come "
        f"{case['status_delays_ms']} ms after a send)",
        *render(rows),
        f"POST -> sandbox over the baseline's round trip: p50 {ratios.get('p50', 0):.1f}x, "
        f"p99 {ratios.get('p99', 0):.1f}x (no target)",
        f"sandbox p99 {reached_bound}{reached['p99']:.1f} ms (target <= "
        f"{TARGET_SANDBOX_P99_MS:g} ms: {mark(reached['p99'] <= TARGET_SANDBOX_P99_MS)}); sent "
        f"visible p99 {bound}{visible['p99']:.1f} ms (target <= {TARGET_SENT_P99_MS:g} ms: "
        f"{mark(visible['p99'] <= TARGET_SENT_P99_MS)})",
        f"check: {check['in_ledger_once']} of {check['answered']} accepted in the ledger once, "
        f"missing {check['missing']}, duplicated {check['duplicated']}, unknown "
        f"{check['unknown_in_ledger']} {mark(check['ok'], 'OK', 'MISMATCH')}; failed POSTs "
        f"{check['post_failures']}, of which went out anyway {check['unanswered_but_sent']}",
        f"  server side, means: inbox-api's POST handler {post.get('mean_ms', 0):.1f} ms, the "
        f"sender's job (delivery -> ack, the Cloud API call included) "
        f"{job.get('mean_ms', 0):.1f} ms, the sandbox's POST /messages "
        f"{result.get('sandbox_breakdown', {}).get('mean_ms', 0):.2f} ms (baseline "
        f"{base.get('sandbox_breakdown', {}).get('mean_ms', 0):.2f} ms)",
        "  store operations per message (the POST, the sender, three status webhooks, the "
        "sample's GETs): "
        + ", ".join(f"{k} {v:g}" for k, v in result.get("store_ops_per_message", {}).items()),
        "  waiting in the broker (ready messages, the most at once): "
        + ", ".join(
            f"{QUEUE_LABELS.get(name, name)} {max(samples, default=0)}"
            for name, samples in result.get("queue_ready_by_s", {}).items()
        ),
        f"  CPU: {cpu_text(result.get('cpu_cores', {}))}",
        f"  baseline CPU: {cpu_text(base.get('cpu_cores', {}))}",
    ]
    return lines


@case_table("live", "Live")
def live_table(case: Json) -> list[str]:
    inbox, bare, check = case["inbox"], case["bare"], case["verification"]
    rows: list[tuple[str, ...]] = [HEADER]
    for label, run in (("inbox-api A -> B", inbox), ("bare fan-out", bare)):
        measured = run["measure"]
        rows.append(
            latency_row(
                f"{label}: measuring client",
                measured["latency_ms"],
                f"change sent -> event received; {measured['sent_rate']:.1f} changes/s, "
                f"failed {measured['failed']}",
            )
        )
        rows.append(
            latency_row(
                f"{label}: {run['crowd']['clients']} clients",
                run["crowd"]["latency_ms"],
                "every client's every event (the crowd's own receive queue included)",
            )
        )
    p99 = inbox["measure"]["latency_ms"]["p99"]
    ratios = case["ratios"]
    lines = [
        f"Live: changes on inbox-api A, events on B's {inbox['crowd']['clients']} + 1 "
        f"WebSocket clients ({inbox['measure']['duration_s']:.0f}s; the same rate into a bare "
        "aiohttp fan-out server as the baseline)",
        *render(rows),
        f"live p99 {p99:.1f} ms (target <= {TARGET_LIVE_P99_MS:g} ms: "
        f"{mark(p99 <= TARGET_LIVE_P99_MS)}); over the bare fan-out: p50 "
        f"{ratios.get('p50', 0):.1f}x, p99 {ratios.get('p99', 0):.1f}x (no target)",
    ]
    until, after = inbox["measure"]["until_published_ms"], inbox["measure"]["after_published_ms"]
    request = inbox["measure"]["request_latency_ms"]
    lines.append(
        f"  where it goes (measuring client, p50/p99 ms): PUT on A -> answered "
        f"{request['p50']:.1f}/{request['p99']:.1f}; sent -> A published the event "
        f"{until['p50']:.1f}/{until['p99']:.1f}; A published -> received from B "
        f"{after['p50']:.1f}/{after['p99']:.1f} (the broker, B's hub, the socket)"
    )
    for label, run in (("inbox-api B", inbox), ("bare fan-out", bare)):
        rss = run["rss_mb"]
        target = (
            f" (target <= {TARGET_LIVE_RSS_MB:g}: {mark(max(rss.values()) <= TARGET_LIVE_RSS_MB)})"
            if label == "inbox-api B"
            else ""
        )
        lines.append(
            f"  {label} RSS MiB: idle {rss['idle']:.1f}, {run['crowd']['clients']} clients "
            f"{rss['connected']:.1f}, end {rss['end']:.1f}, peak {rss['peak']:.1f}{target}"
        )
    lines.append(
        f"check: {check['changes']} changes, every client got every event: drops "
        f"{check['drops']}, reloads {check['reloads']}, closed {check['closed']} "
        f"{mark(check['ok'], 'OK', 'MISMATCH')} (bare: drops {check['bare_drops']})"
    )
    for label, run in (("inbox-api", inbox), ("bare", bare)):
        lines.append(f"  CPU ({label}): {cpu_text(run['measure'].get('cpu_cores', {}))}")
    return lines
