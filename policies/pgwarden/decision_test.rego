# METADATA
# title: Decision tests
# description: |
#   The combination rules of data.pgwarden.decision, each with its own test, using
#   literal topic outcomes; and the complete decision for a few literal inputs.
package pgwarden.decision_test

import data.pgwarden.destructive
import data.pgwarden.exfiltration
import data.pgwarden.fixtures_test as fx
import data.pgwarden.identities
import data.pgwarden.masking
import data.pgwarden.privilege

deny(reason) := {"effect": "deny", "reason": reason, "cache_ttl_s": 60}

approval(reason) := {"effect": "require_approval", "reason": reason, "cache_ttl_s": 60}

mask(column, function) := {"effect": "mask", "column": column, "mask": function, "reason": function, "cache_ttl_s": 60}

limit(rows, ttl) := {
	"effect": "row_limit", "row_limit": rows,
	"reason": sprintf("limit %d", [rows]), "cache_ttl_s": ttl,
}

# An input with no outcomes of its own (the DBA, an empty SELECT), so that the topic
# outcomes of each test are exactly the literal ones it sets.
quiet := fx.input_for(fx.dba, {})

test_deny_any_deny_wins if {
	decision := data.pgwarden.decision with input as quiet
		with exfiltration.outcomes as {deny("b: export")}
		with destructive.outcomes as {approval("a: drop")}
		with masking.outcomes as {mask("public.customers.email", "hash")}
	decision.action == "deny"
	decision.reasons == ["b: export", "a: drop", "hash"]
}

test_deny_approval_holds_when_nothing_denies if {
	decision := data.pgwarden.decision with input as quiet
		with privilege.outcomes as {approval("privilege: GRANT")}
	decision.action == "require_approval"
	decision.reasons == ["privilege: GRANT"]
	decision.cache_ttl_s == 0
}

test_allow_approval_recorded_in_context if {
	approved := object.union(quiet, {"context": {"approved": true}})
	decision := data.pgwarden.decision with input as approved
		with privilege.outcomes as {approval("privilege: GRANT")}
	decision.action == "allow"
	decision.reasons == ["privilege: GRANT", "decision: the approval recorded in context.approved applies"]
	decision.cache_ttl_s == 0
}

test_deny_approval_in_context_does_not_lift_a_deny if {
	approved := object.union(quiet, {"context": {"approved": true}})
	decision := data.pgwarden.decision with input as approved
		with privilege.outcomes as {approval("privilege: GRANT"), deny("privilege: ALTER SYSTEM")}
	decision.action == "deny"
	decision.reasons == ["privilege: ALTER SYSTEM", "privilege: GRANT"]
}

test_allow_smallest_row_limit_applies if {
	decision := data.pgwarden.decision with input as quiet
		with identities.outcomes as {limit(1000, 60), limit(10, 60)}
	decision.action == "allow"
	decision.row_limit == 10
}

test_allow_strongest_mask_per_column if {
	decision := data.pgwarden.decision with input as quiet
		with masking.outcomes as {
			mask("public.customers.email", "partial_email"),
			mask("public.customers.email", "hash"),
			mask("public.customers.phone", "last4"),
		}
		with exfiltration.outcomes as {mask("public.customers.phone", "null")}
	decision.mask == {"public.customers.email": "hash", "public.customers.phone": "null"}
}

test_deny_unknown_mask_function_counts_as_strongest if {
	decision := data.pgwarden.decision with input as quiet
		with masking.outcomes as {
			mask("public.customers.email", "null"),
			mask("public.customers.email", "scramble"),
		}
	decision.mask == {"public.customers.email": "scramble"}
}

test_allow_smallest_cache_ttl_of_contributing_rules if {
	decision := data.pgwarden.decision with input as quiet
		with identities.outcomes as {limit(1000, 30), limit(500, 5)}
	decision.cache_ttl_s == 5
}

test_allow_reasons_of_every_contributing_rule_are_kept if {
	decision := data.pgwarden.decision with input as quiet
		with identities.outcomes as {limit(1000, 60)}
		with masking.outcomes as {mask("public.customers.email", "hash")}
	decision.reasons == ["hash", "limit 1000"]
}

test_allow_nothing_contributes if {
	decision := data.pgwarden.decision with input as quiet
	decision == {
		"action": "allow", "reasons": [], "mask": {}, "row_limit": null,
		"cache_ttl_s": 60, "dry_run": false, "cache_scope": "identity",
	}
}

test_allow_cache_scope_from_settings if {
	decision := data.pgwarden.decision with input as quiet with data.data.settings.cache_scope as "session"
	decision.cache_scope == "session"
	settings := object.remove(data.data.settings, {"cache_scope"})
	without := data.pgwarden.decision with input as quiet with data.data.settings as settings
	without.cache_scope == "session"
}

test_allow_dry_run_from_settings if {
	decision := data.pgwarden.decision with input as quiet with data.data.settings.dry_run as true
	decision.dry_run == true
}

test_deny_input_without_statement if {
	decision := data.pgwarden.decision with input as {"identity": fx.dba}
	decision == {
		"action": "deny",
		"reasons": ["decision: the input document has no statement"],
		"mask": {}, "row_limit": null, "cache_ttl_s": 0, "dry_run": false,
	}
}

test_deny_unknown_identity if {
	decision := data.pgwarden.decision with input as fx.input_for(fx.stranger, {})
	decision == {
		"action": "deny",
		"reasons": [`identity: "agent:nobody" matches no profile`],
		"mask": {}, "row_limit": null, "cache_ttl_s": 60, "dry_run": false, "cache_scope": "identity",
	}
}

test_allow_reporting_reads_masked_email if {
	facts := {
		"relations": [fx.relation("customers", "read")],
		"columns": [fx.column("customers", "email", "output"), fx.column("customers", "id", "filter")],
		"outputs": [fx.output("customers", "email")],
		"has_where": true, "limit": 1,
	}
	decision := data.pgwarden.decision with input as fx.input_for(fx.reporting, facts)
	decision == {
		"action": "allow",
		"reasons": [
			"identity: profile reporting returns at most 1000 rows",
			"masking: public.customers.email is returned masked with partial_email",
		],
		"mask": {"public.customers.email": "partial_email"},
		"row_limit": 1000, "cache_ttl_s": 60, "dry_run": false, "cache_scope": "identity",
	}
}
