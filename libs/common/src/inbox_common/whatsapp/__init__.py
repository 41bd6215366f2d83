"""WhatsApp Cloud API specifics: webhook signatures (and, as it grows, the Cloud API client)."""
