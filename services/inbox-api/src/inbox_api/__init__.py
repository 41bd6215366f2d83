"""inbox-api: consumes webhook events into MongoDB and serves agents and admins."""
