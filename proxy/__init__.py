"""The pgwarden proxy: frames the PostgreSQL wire protocol, authenticates agents and
enforces the policy decision for every statement (imported as ``pgwarden.proxy``)."""
