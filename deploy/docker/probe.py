"""The container's health probe: ``python /app/probe.py [livez|health] [port]``.

Exit 0 when ``GET /livez`` (the default: the process is alive) or ``GET /api/health`` (ready:
HTTP 200 is ``ok`` or ``degraded``, 503 is ``down``) answers 200 on 127.0.0.1. The port is the
argument, else the service's own port variable, else its default: the image knows which
service it holds from ``INBOX_SERVICE`` (the Dockerfile's build argument). Standard library
only, since the image has no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.request

# service folder -> (port variable, default port); services/ops-cli serves no HTTP.
PORTS = {
    "webhook-ingest": ("WEBHOOK_INGEST_PORT", 8080),
    "inbox-api": ("INBOX_API_PORT", 8081),
    "retry-worker": ("RETRY_WORKER_PORT", 8082),
    "maintenance": ("MAINTENANCE_PORT", 8083),
    "whatsapp-sandbox": ("WHATSAPP_SANDBOX_PORT", 8090),
}
PATHS = {"livez": "/livez", "health": "/api/health"}


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "livez"
    service = os.environ.get("INBOX_SERVICE", "")
    if len(argv) > 1:
        port = int(argv[1])
    elif service in PORTS:
        variable, default = PORTS[service]
        port = int(os.environ.get(variable, default))
    else:
        return 0  # a one-shot command (ops-cli): nothing to probe
    url = f"http://127.0.0.1:{port}{PATHS[which]}"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"probe {url}: {exc}", file=sys.stderr)  # noqa: T201 - a probe's one line
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
