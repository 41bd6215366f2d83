"""The printed report of a run: one table per group, the ratios and the targets beside them.

Targets are printed, never asserted: every ratio compares cases measured in the same run, on
the same machine, because the machine is small and shared and absolute numbers move with it.
"""

from __future__ import annotations

from typing import Any

from inbox_testkit.bench import p1
from inbox_testkit.bench.layout import Json, case_table, cpu_text, latency_row, mark, render
from inbox_testkit.bench.live import TARGET_LIVE_P99_MS, TARGET_LIVE_RSS_MB
from inbox_testkit.bench.p1 import TARGET_BARE_RATIO, TARGET_P99_MS, TARGET_PEER_RATIO
from inbox_testkit.bench.p2 import TARGET_RATIO as TARGET_CONSUME_RATIO
from inbox_testkit.bench.p3 import TARGET_P99_MS as TARGET_E2E_P99_MS
from inbox_testkit.bench.report_agents import live_table, send_table
from inbox_testkit.bench.send import TARGET_SANDBOX_P99_MS, TARGET_SENT_P99_MS

CASES = (*p1.CASES, "consume", "e2e", "send", "live")
GROUPS = {
    "p1": p1.CASES,
    "p2": ("consume",),
    "p3": ("e2e",),
    "send": ("send",),
    "live": ("live",),
    "p5": (),
}
SERVICES = ("webhook-ingest", "inbox-api", "inbox-api A")
TARGET_RSS_MB = 100.0
# inbox-api B holds the live group's WebSocket clients.
RSS_TARGETS = {**dict.fromkeys(SERVICES, TARGET_RSS_MB), "inbox-api B": TARGET_LIVE_RSS_MB}
# P1 cases whose requests go through the broker: its CPU is part of what a request costs.
PUBLISHING = ("ingest", "raw", "raw1")
NOT_SERVER = ("wrk", "rabbitmq", "load generator")

LABELS = {
    "ingest": "P1 ingest (webhook-ingest)",
    "bare": "(a) bare aiohttp, HTTP ceiling",
    "raw": "(b) raw aio-pika, batches of 64",
    "raw1": "(b') raw aio-pika, 1 body/msg",
    "pywa": "(c) pywa + FastAPI + uvicorn",
    "consume": "P2 consume",
    "e2e": "P3 end to end",
    "send": "Send (inbox-api -> sandbox)",
    "live": "Live (A -> B's WebSocket clients)",
}
SHAPE_LABELS = {"batched": "micro-batched", "single": "one-body"}
CONSUMER_LABELS = {"inbox-api": "inbox-api", "minimal": "minimal consumer"}


def targets() -> dict[str, str]:
    return {
        "ingest/bare": f">= {TARGET_BARE_RATIO}",
        "ingest p99 ms at 50 connections": f"<= {TARGET_P99_MS}",
        "ingest/pywa": f">= {TARGET_PEER_RATIO}",
        "consume inbox-api/minimal, each backlog": f">= {TARGET_CONSUME_RATIO}",
        "e2e visible p99 ms": f"<= {TARGET_E2E_P99_MS}",
        "send POST -> sandbox p99 ms": f"<= {TARGET_SANDBOX_P99_MS}",
        "send POST -> status sent visible p99 ms": f"<= {TARGET_SENT_P99_MS}",
        "live change -> event p99 ms": f"<= {TARGET_LIVE_P99_MS}",
        "live inbox-api B rss mb with the clients": f"<= {TARGET_LIVE_RSS_MB}",
        "peak rss mb (each service)": f"<= {TARGET_RSS_MB}",
    }


def ok(cases: dict[str, Any], name: str) -> bool:
    return name in cases and "error" not in cases[name]


def rate(case: dict[str, Any]) -> float:
    result = case["result"]
    return float(result["requests"]) / float(result["duration_s"] or 1)


def errors(case: dict[str, Any]) -> int:
    result = case["result"]
    return int(result["bad_status"]) + sum(int(v) for v in result["socket_errors"].values())


# -- P1 ------------------------------------------------------------------------------------


def server_run(case: dict[str, Any]) -> float:
    """Cores the server-side process (the service, a ceiling or the peer) was on a CPU."""
    used = case["result"].get("cpu_cores", {})
    return next((v["run"] for k, v in used.items() if k not in NOT_SERVER), 0.0)


def efficiency(case: dict[str, Any]) -> float | None:
    """Requests per CPU-second of the server-side process: steadier than req/s when the
    machine is shared, since a neighbour takes CPU time away but does not make it dearer."""
    server = server_run(case)
    return rate(case) / server if server else None


def cpu_per_request(name: str, case: dict[str, Any]) -> dict[str, float]:
    """CPU microseconds per request: the server-side process, plus the broker's for the cases
    that publish (in the others the broker's CPU is the rest of the machine's, not theirs)."""
    per = 1e6 / rate(case) if rate(case) else 0.0
    broker = case["result"].get("cpu_cores", {}).get("rabbitmq", {}).get("run", 0.0)
    server = server_run(case) * per
    own_broker = broker * per if name in PUBLISHING else 0.0
    return {
        "server_us": round(server, 1),
        "broker_us": round(own_broker, 1),
        "total_us": round(server + own_broker, 1),
        "broker_cores": broker,
    }


def p1_notes(name: str, case: dict[str, Any], report: dict[str, Any]) -> str:
    result = case["result"]
    if name in ("raw", "raw1"):
        note = (
            f"{report['args']['connections']} messages in flight, 1 channel; "
            f"{result['messages'] / result['duration_s']:,.0f} msg/s, latency per message"
        )
    else:
        note = f"{report['args']['connections']} conns, {report['load_generator']}"
    check = case.get("verification")
    if check is not None:
        if name == "ingest":
            note += f"; accepted={check['server_accepted']} vs 200s={check['client_200s']}"
        elif name in ("raw", "raw1"):
            note += f"; queue={check['count_queue_messages']} vs confirmed"
        elif name == "pywa":
            note += f"; handler={check['handler_calls']} vs 200s={check['client_200s']}"
        note += " " + mark(check["ok"], "OK", "MISMATCH")
        if name == "ingest" and check.get("amqp_messages"):
            mean = check["server_accepted"] / check["amqp_messages"]
            note += f"; {mean:.1f} bodies/AMQP msg"
    if case.get("bodies_cycled"):
        note += "; bodies reused"
    if len(case.get("rounds", [])) > 1:
        note += "; rounds " + "/".join(f"{r['rate']:,.0f}" for r in case["rounds"])
    return note


def p1_table(report: dict[str, Any]) -> list[str]:
    cases: dict[str, Any] = report["cases"]
    if not any(name in cases for name in GROUPS["p1"]):
        return []
    rows: list[tuple[str, ...]] = [
        ("case", "req/s", "p50 ms", "p99 ms", "errors", "req/CPU-s", "CPU us/req", "notes")
    ]
    for name in GROUPS["p1"]:
        case = cases.get(name)
        if case is None:
            continue
        if "error" in case:
            failed = "FAILED: " + case["error"][:70]
            rows.append((LABELS[name], "-", "-", "-", "-", "-", "-", failed))
            continue
        latency = case["result"]["latency_ms"]
        per_cpu = efficiency(case)
        rows.append(
            (
                LABELS[name],
                f"{rate(case):,.0f}",
                f"{latency['p50']:.2f}",
                f"{latency['p99']:.2f}",
                str(errors(case)),
                f"{per_cpu:,.0f}" if per_cpu else "-",
                f"{cpu_per_request(name, case)['total_us']:,.0f}",
                p1_notes(name, case, report),
            )
        )
    lines = [
        f"P1 ingest ({report['args']['connections']} connections; req/s of the raw cases = "
        "bodies confirmed a second)",
        *render(rows),
    ]
    lines += p1_ratios(report)
    lines.append(
        "CPU us/req = CPU microseconds per request: the server-side process's, plus RabbitMQ's "
        "in the cases that publish (ingest, raw, raw1); req/CPU-s counts the server-side "
        "process only"
    )
    for name in GROUPS["p1"]:
        if ok(cases, name):
            cost = cpu_per_request(name, cases[name])
            split = (
                f"{cost['server_us']:,.0f} server + {cost['broker_us']:,.0f} broker"
                if name in PUBLISHING
                else f"{cost['server_us']:,.0f} server (broker background "
                f"{cost['broker_cores']:.2f} cores, not counted)"
            )
            lines.append(f"  {name:<7} {split}")
    lines.append(
        "CPU in the measured window, in cores: run = on a CPU, wait = runnable but queued "
        "behind other work"
    )
    for name in GROUPS["p1"]:
        if ok(cases, name):
            lines.append(f"  {name:<7} {cpu_text(cases[name]['result'].get('cpu_cores', {}))}")
    ingest = cases.get("ingest")
    if ingest is not None and ingest.get("server_breakdown"):
        parts = ingest["server_breakdown"]
        client = ingest["result"]["latency_ms"]["mean"]
        lines.append(
            f"ingest mean latency {client:.1f} ms: handler {parts.get('handler_ms', 0):.1f} ms "
            f"(of which publish->confirm {parts.get('publish_confirm_ms', 0):.1f} ms), "
            "the rest reading/queueing/writing"
        )
    return lines


def p1_ratios(report: dict[str, Any]) -> list[str]:
    ratios: dict[str, Any] = report["ratios"]
    cases: dict[str, Any] = report["cases"]
    lines = target_ratio(ratios, "ingest/bare", TARGET_BARE_RATIO)
    if ok(cases, "ingest"):
        p99 = cases["ingest"]["result"]["latency_ms"]["p99"]
        lines.append(
            f"ingest p99  = {p99:.1f} ms at {report['args']['connections']} connections "
            f"(target <= {TARGET_P99_MS:g} ms: {mark(p99 <= TARGET_P99_MS)})"
        )
    lines += target_ratio(ratios, "ingest/pywa", TARGET_PEER_RATIO)
    if "ingest/raw" in ratios:
        lines.append(
            f"ingest/raw  = {ratios['ingest/raw']:.2f}   (the broker ceiling for micro-batches "
            "of 64; no target)"
        )
    if "ingest/raw1" in ratios:
        lines.append(
            f"ingest/raw1 = {ratios['ingest/raw1']:.2f}   (one body per message, a reference; "
            "no target)"
        )
    return lines


def target_ratio(ratios: dict[str, Any], name: str, target: float) -> list[str]:
    """The line of a ratio with a target (none when it was not measured), and its value per
    CPU-second of the server process when known."""
    if name not in ratios:
        return []
    value = ratios[name]
    per_cpu = ratios.get(f"{name} per CPU-s")
    return [
        f"{name} = {value:.2f}   (target >= {target}: {mark(value >= target)})"
        + (f"; per CPU-second of the server process {per_cpu:.2f}" if per_cpu else "")
    ]


# -- P2 ------------------------------------------------------------------------------------


@case_table("consume", "P2 consume")
def p2_table(case: Json) -> list[str]:
    concern = ", ".join(f"{k}={v}" for k, v in case["write_concern"].items())
    rows: list[tuple[str, ...]] = [("case", "events/s", "events", "AMQP msgs", "seconds", "notes")]
    for d in case["drains"]:
        check = d["verification"]
        window = d["ledger_window"]
        if d["consumer"] == "inbox-api":
            note = f"first delivery {d['watch']['first_delivery_after_s']:.1f}s after spawn"
        else:
            child = d["child"]
            batches = child["batch_events"]
            note = (
                f"{child['batches']} batches of {batches['mean']:.1f} events (max "
                f"{batches['max']}), {child['in_flight']} in flight, prefetch "
                f"{child['prefetch']}"
            )
        note += f"; ledger window {window['seconds']:.2f}s, attempts <= {window['max_attempts']}"
        if len(d.get("round_rates", [])) > 1:
            note += "; rounds " + "/".join(f"{r:,.0f}" for r in d["round_rates"])
        rows.append(
            (
                f"{CONSUMER_LABELS[d['consumer']]}, {SHAPE_LABELS[d['backlog']]}",
                f"{d['rate']:,.0f}",
                str(d["events"]),
                str(d["messages"]),
                f"{d['seconds']:.2f}",
                f"check {mark(check['ok'], 'OK', 'MISMATCH')}; {note}",
            )
        )
    raw = case["raw_insert"]
    rows.append(
        (
            "insert_many (reference)",
            f"{raw['rate']:,.0f}",
            str(raw["documents"]),
            "-",
            f"{raw['documents'] / raw['rate']:.2f}",
            f"message-sized documents, batches of {raw['batch']}, median of {raw['rounds']} "
            f"rounds {raw['rates']}",
        )
    )
    if "upsert_rate" in raw:
        rows.append(
            (
                "bulk upserts (reference)",
                f"{raw['upsert_rate']:,.0f}",
                str(raw["upserts"]),
                "-",
                f"{raw['upserts'] / raw['upsert_rate']:.2f}",
                f"UpdateOne by unique wamid, unordered bulk_write of {raw['batch']}",
            )
        )
    lines = [
        f"P2 consume ({case['events']} events: {case['contacts']} contacts; consumers pinned "
        f"to the server core; one SecantusDB, a fresh database per drain; fastest of "
        f"{case.get('rounds', 1)} interleaved rounds; store writes {concern})",
        *render(rows),
    ]
    rates = {(d["backlog"], d["consumer"]): float(d["rate"]) for d in case["drains"]}
    for shape, ratio in case["ratios"].items():
        lines.append(
            f"inbox-api/minimal, {SHAPE_LABELS[shape]} backlog = {ratio:.2f}   (target >= "
            f"{TARGET_CONSUME_RATIO}: {mark(ratio >= TARGET_CONSUME_RATIO)})"
        )
    reference = ", ".join(
        f"{SHAPE_LABELS[shape]} {rates[(shape, 'inbox-api')] / raw['rate']:.3f}"
        for shape in case["ratios"]
    )
    lines.append(f"inbox-api/insert_many: {reference} (a reference; no target)")
    lines.append(
        "events/s = events / (last ack - first delivery); the ledger window (first attempt to "
        "last fate) leaves out the last ledger write; micro-batches of "
        f"{case['batch_bodies']} bodies"
    )
    lines.append("CPU while draining, in cores; and CPU milliseconds per event")
    for d in case["drains"]:
        used = d.get("cpu_cores", {})
        per_event = ", ".join(
            f"{who} {value['run'] / d['rate'] * 1e3:.2f}"
            for who, value in used.items()
            if d["rate"] and who != "rabbitmq"
        )
        label = f"{CONSUMER_LABELS[d['consumer']]}, {SHAPE_LABELS[d['backlog']]}"
        lines.append(f"  {label:<34} {cpu_text(used)}")
        lines.append(f"  {'':<34} ms/event: {per_event}")
    for d in case["drains"]:
        if d["consumer"] == "minimal":
            steps = ", ".join(f"{k} {v:.2f}" for k, v in d["child"]["timing_s"].items())
            lines.append(
                f"minimal consumer, {SHAPE_LABELS[d['backlog']]}: seconds per step: {steps}"
            )
    return lines


# -- P3 and P5 -----------------------------------------------------------------------------


@case_table("e2e", "P3 end to end")
def p3_table(case: Json) -> list[str]:
    result = case["result"]
    post = result["post_latency_ms"]
    visible = result["visible_latency_ms"]
    check = case["verification"]
    span = max(1.0, float(result["duration_s"]))
    rows: list[tuple[str, ...]] = [
        ("measure", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "notes"),
        latency_row(
            "POST -> 200 (ingest)",
            post,
            f"offered {result['offered_rate']:g}/s, sent {result['sent_rate']:.1f}/s, "
            f"non-200 {result['bad_status'] + result['errors']}",
            middle="p90",
        ),
        latency_row(
            "POST -> visible via GET",
            visible,
            f"{result['tracked']} of {result['contacts']} conversations timed, each polled every "
            f"{result['poll_interval_ms']:g} ms while waiting ({result['gets'] / span:.0f} GET/s, "
            f"GET p50 {result['get_latency_ms']['p50']:.1f} ms); not visible after the "
            f"drain {result['sampled_unseen']} (counted at the time waited)",
            middle="p90",
        ),
    ]
    p99 = float(visible["p99"])
    bound = ">= " if result["sampled_unseen"] else ""
    concern = ", ".join(f"{k}={v}" for k, v in case.get("write_concern", {}).items())
    lines = [
        f"P3 end to end ({result['duration_s']:.0f}s)",
        *render(rows),
        f"visible p99 {bound}{p99:.1f} ms (target <= {TARGET_E2E_P99_MS:g} ms: "
        f"{mark(p99 <= TARGET_E2E_P99_MS)}); check: accepted {check['ingest_accepted']}, "
        f"processed {check['ledger_processed']} {mark(check['ok'], 'OK', 'MISMATCH')}",
        f"  offered rate: {case['rate_source']}",
        f"  store writes are durable: {concern or '?'} (create_client, as in the services)",
    ]
    if case.get("amqp_messages"):
        lines.append(
            f"  webhook-ingest published {check['ingest_accepted']} webhooks in "
            f"{case['amqp_messages']} AMQP messages "
            f"({check['ingest_accepted'] / case['amqp_messages']:.2f} bodies per message)"
        )
    lines += [
        f"  backlog: queue ready (not yet delivered to inbox-api) peaked at "
        f"{result.get('queue_ready_max', '?')} AMQP messages; visible p50 per 10 s of sending "
        "(ms): " + " ".join(f"{v:g}" for v in result.get("visible_p50_ms_by_10s", [])),
        f"  CPU: {cpu_text(result.get('cpu_cores', {}))}",
    ]
    return lines


def p5_table(report: dict[str, Any]) -> list[str]:
    memory: list[dict[str, Any]] = report["memory"]
    if not memory:
        return []
    cases = [c for c in CASES if any(m["case"] == c for m in memory)]
    processes = list(dict.fromkeys(m["process"] for m in memory))
    rows: list[tuple[str, ...]] = [("process", *cases, "peak MiB", "target")]
    for process in processes:
        cells = []
        for case in cases:
            peaks = [
                m["peak_rss_mb"] for m in memory if m["case"] == case and m["process"] == process
            ]
            cells.append(f"{max(peaks):.1f}" if peaks else "-")
        peak = max(m["peak_rss_mb"] for m in memory if m["process"] == process)
        limit = RSS_TARGETS.get(process)
        target = f"<= {limit:g}: {mark(peak <= limit)}" if limit else "(no target)"
        rows.append((process, *cells, f"{peak:.1f}", target))
    return ["P5 memory: peak RSS (VmHWM) per process and case, MiB", *render(rows)]


def table(report: dict[str, Any]) -> str:
    parts = [
        p1_table(report),
        p2_table(report),
        p3_table(report),
        send_table(report),
        live_table(report),
        p5_table(report),
    ]
    return "\n\n".join("\n".join(p) for p in parts if p)


def compute_ratios(report: dict[str, Any]) -> None:
    cases = report["cases"]
    ratios = report["ratios"]
    for peer in ("bare", "raw", "raw1", "pywa"):
        if ok(cases, "ingest") and ok(cases, peer):
            ratios[f"ingest/{peer}"] = rate(cases["ingest"]) / rate(cases[peer])
    for peer in ("bare", "pywa"):
        if ok(cases, "ingest") and ok(cases, peer):
            ingest, other = efficiency(cases["ingest"]), efficiency(cases[peer])
            if ingest and other:
                ratios[f"ingest/{peer} per CPU-s"] = ingest / other
    for name in GROUPS["p1"]:
        if ok(cases, name):
            cases[name]["cpu_per_request"] = cpu_per_request(name, cases[name])
    if ok(cases, "consume"):
        for shape, value in cases["consume"]["ratios"].items():
            ratios[f"consume inbox-api/minimal {shape}"] = value
    for name in ("send", "live"):
        if ok(cases, name):
            for pct, value in cases[name]["ratios"].items():
                ratios[f"{name} {pct} / baseline"] = value
    services: dict[str, float] = {}
    for entry in report["memory"]:
        name = entry["process"]
        services[name] = max(services.get(name, 0.0), entry["peak_rss_mb"])
    report["peak_rss_mb"] = services
