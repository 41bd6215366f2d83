"""inbox-api's MongoDB access, one module per aggregate."""
