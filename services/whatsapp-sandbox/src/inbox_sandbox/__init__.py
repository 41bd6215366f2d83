"""whatsapp-sandbox: a local stand-in for Meta's WhatsApp Cloud API (a dev, test and load tool).

It speaks Meta's request, response, error and webhook formats: sends and read receipts on the
Graph paths (``handlers``, ``schema``, ``errors``), Meta's rules (``limits``, ``customers``),
signed status and customer webhooks to the ingest (``statuses``, ``inbound``, ``webhooks``),
and its own ``/sandbox`` API (``admin``): customers writing in, the ``ledger`` of accepted
sends, ``faults`` and ``numbers``. ``payloads`` builds Meta's webhook bodies for the sandbox
itself, the tests and the benchmarks. Never deployed to production.
"""
