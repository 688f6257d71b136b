# METADATA
# title: Test fixtures
# description: |
#   Literal input documents (contract v1) for the policy tests: the reference identities,
#   a session on the shop database, and helpers to write statement facts briefly.
package pgwarden.fixtures_test

reporting := {
	"subject": "agent:reporting", "issuer": "https://idp.example", "groups": ["analytics"],
	"auth_method": "jwt", "claims": {},
}

etl := {"subject": "agent:etl", "issuer": "https://idp.example", "groups": ["etl"], "auth_method": "jwt", "claims": {}}

dba := {"subject": "human:dba", "issuer": "https://idp.example", "groups": ["dba"], "auth_method": "mtls", "claims": {}}

# A token that verifies but matches no profile.
stranger := {
	"subject": "agent:nobody", "issuer": "https://idp.example", "groups": ["sales"],
	"auth_method": "jwt", "claims": {},
}

shop := {
	"id": "session-1", "proxy_id": "edge-1", "client_addr": "10.0.0.7", "database": "shop",
	"application_name": "tests", "tls": true, "in_transaction": false, "requested_user": "",
}

statement(facts) := object.union(
	{
		"fingerprint": "0000000000000000", "sql_normalized": "", "command": "SELECT", "protocol": "extended",
		"read_only": true, "relations": [], "columns": [], "outputs": [], "star": [], "functions": [],
		"copy": null, "limit": null, "has_where": false, "set": null, "nested": [], "unresolved": false,
	},
	facts,
)

input_for(identity, facts) := {
	"identity": identity,
	"session": shop,
	"statement": statement(facts),
	"context": {"now": "2026-11-24T06:00:00Z", "usage": {"rows_last_hour": 0}, "approved": false},
}

relation(name, access) := {"schema": "public", "name": name, "kind": "table", "access": access}

column(table, name, usage) := {"relation": sprintf("public.%s", [table]), "column": name, "usage": usage}

output(table, name) := {"name": name, "sources": [sprintf("public.%s.%s", [table, name])], "direct": true}

derived(table, name) := {"name": name, "sources": [sprintf("public.%s.%s", [table, name])], "direct": false}

copy_to(target, relation_name) := {"direction": "to", "target": target, "relation": relation_name, "query": false}
