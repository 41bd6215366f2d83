"""The application keys of maintenance's own services (shared resources have theirs in the
library)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from inbox_maintenance.schedule import Schedule
from inbox_maintenance.service import Maintenance

HEALTH_HTTP = web.AppKey("health_http", aiohttp.ClientSession)
MAINTENANCE = web.AppKey("maintenance", Maintenance)
SCHEDULE = web.AppKey("schedule", Schedule)
