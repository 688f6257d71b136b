"""pgwarden's benchmarks: ``bench/run`` (``python -m bench``) measures PostgreSQL direct,
through PgBouncer and through pgwarden in interleaved rounds; see docs/performance.md."""
