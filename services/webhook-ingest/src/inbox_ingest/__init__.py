"""webhook-ingest: verifies Meta's signature on the raw body and publishes it durably."""
