"""Live updates: every change in the inbox, pushed to the WebSocket clients of its tenant on
every inbox-api replica (through the ``<ns>.live`` fanout exchange).

Wiring: ``app.cleanup_ctx.append(live_ctx())`` after ``broker_ctx``, and
``add_live_routes(app)``; publishers call ``app[LIVE].publish(tenant, type, data)``.
"""

from inbox_api.live.events import TOKEN_REVOKED
from inbox_api.live.handlers import add_live_routes
from inbox_api.live.hub import LIVE, LiveUpdates, live_ctx

__all__ = ["LIVE", "TOKEN_REVOKED", "LiveUpdates", "add_live_routes", "live_ctx"]
