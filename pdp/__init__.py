"""The pgwarden policy decision point: decides statements with OPA, owns the audit log
(imported as ``pgwarden.pdp``)."""
