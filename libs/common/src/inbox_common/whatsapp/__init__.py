"""WhatsApp Cloud API specifics: webhook signatures and Meta-format sample payloads."""
