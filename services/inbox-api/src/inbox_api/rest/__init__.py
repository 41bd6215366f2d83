"""The REST API for agents and admins."""
