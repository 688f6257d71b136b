"""The audit trail: records the proxies build, made durable and hash-chained by the PDP.

``records`` turns ``pb.AuditRecord`` messages into stored documents, ``chain`` links and
verifies them, ``store`` writes them (JSON Lines file or PostgreSQL table, idempotent by
``record_id``), ``cli`` is ``pgwarden audit tail|query|verify``. See docs/audit.md.
"""
