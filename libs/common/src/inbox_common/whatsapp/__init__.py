"""WhatsApp Cloud API specifics: webhook signatures (and, as it grows, the Cloud API client).
Client: cloud_api; request bodies: messages; error table: errors; classifying: classify."""
