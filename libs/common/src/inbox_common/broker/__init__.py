"""RabbitMQ: topology, a confirmed publisher and a robust consumer."""
