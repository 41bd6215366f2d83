"""The webhook consumer: AMQP edge (handlers) and the logic that applies events (service)."""
