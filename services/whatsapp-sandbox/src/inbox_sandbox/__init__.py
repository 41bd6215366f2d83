"""whatsapp-sandbox: a local stand-in for Meta's WhatsApp Cloud API (a dev, test and load tool).

It speaks Meta's request, response, error and webhook formats; ``payloads`` builds Meta's
webhook bodies for the sandbox itself, the tests and the benchmarks.
"""
