"""Test support of the WhatsApp inbox, used by ``tests/`` and ``make bench``.

- ``backends``: where the real broker and store come from (env, testcontainers, local).
- ``plugin``: the pytest fixtures every test directory shares (loaded by ``tests/conftest.py``).
- ``broker``, ``webhooks``, ``store``, ``polling``: small helpers the tests call.
- ``faults``: the services as black boxes, the total-queue checker, RabbitMQ nodes and
  clusters, a fault-injecting TCP proxy, and the scenario runner of the fault suite.
- ``bench``: the benchmarks behind ``make bench``.

Nothing here is imported by the services.
"""
