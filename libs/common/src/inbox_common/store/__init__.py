"""MongoDB: the client, the schema as versioned migrations, and its check."""
