"""retry-worker: the due retries of outbound sends, back to their queue (see ``worker``)."""
