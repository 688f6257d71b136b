"""pgwarden: a PostgreSQL gateway that stops data exfiltration by software agents."""

__version__ = "0.1.0"
