"""Statement analysis: the ``statement`` part of the input document (contract v1).

How the proxy uses it::

    analyzer = Analyzer(catalog)                       # one per upstream database
    state = analyzer.new_session(user="app", search_path='"$user", public')

    # Query (simple protocol): one or more statements
    for analyzed in analyzer.analyze_query(sql, state, "simple"):
        analyzed.statement      # pgwarden.proxy.decision.Statement (facts + digest)
        analyzed.parse_error    # ParseErrorInfo(message, position) or None
        ...decide, forward...
        state.apply(analyzed)   # only after the upstream completed it
    state.ready(status, failed=...)  # ReadyForQuery: undoes what a failed transaction did

    # Parse (extended protocol): one statement with $n placeholders
    [parsed] = analyzer.analyze_query(sql, state, "extended")
    state.register_prepared(name, parsed)             # named, once the server confirmed it
    # Bind: the LIMIT, when it is a parameter, is filled from the parameter values
    bound = parsed.bind(values, format_codes)         # parsed.limit_param says which $n

    state.parameter_status(name, value)               # ParameterStatus from upstream
    if analyzer.catalog_due(): analyzer.set_catalog(load_catalog(rows))

Everything is memoized per (query text, protocol, search path, catalog version): a
repeated statement costs a dictionary lookup and returns the same objects, digests
included. The analysis never raises for SQL that does not parse: it returns a result
with ``parse_error`` set and ``unresolved`` facts.

Modules: :mod:`.analyzer` (memo, session state), :mod:`.facts` (the walker over pglast's
JSON parse tree), :mod:`.commands` (command tags), :mod:`.catalog` (schema catalog and its
queries), :mod:`.plpgsql` (SQL inside PL/pgSQL), :mod:`.sqltext` (scanner-based
normalization), :mod:`.explain` (``pgwarden explain``).
"""

from pgwarden.proxy.analysis.analyzer import (
    AnalyzedStatement,
    Analyzer,
    ParseErrorInfo,
    SessionAnalysisState,
)
from pgwarden.proxy.analysis.catalog import (
    CATALOG_QUERIES,
    CATALOG_SETUP_SQL,
    Catalog,
    CatalogColumn,
    CatalogRelation,
    CatalogTooLarge,
    catalog_of,
    load_catalog,
)
from pgwarden.proxy.analysis.commands import COMMANDS
from pgwarden.proxy.analysis.facts import PreparedQuery, SessionEffect

__all__ = [
    "CATALOG_QUERIES",
    "CATALOG_SETUP_SQL",
    "COMMANDS",
    "AnalyzedStatement",
    "Analyzer",
    "Catalog",
    "CatalogColumn",
    "CatalogRelation",
    "CatalogTooLarge",
    "ParseErrorInfo",
    "PreparedQuery",
    "SessionAnalysisState",
    "SessionEffect",
    "catalog_of",
    "load_catalog",
]
