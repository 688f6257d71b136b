"""Local, throwaway instances of the parts pgwarden runs with: PostgreSQL, OPA and
pgwarden's own processes. Used by the test harness, the benchmarks and ``pgwarden up``."""
