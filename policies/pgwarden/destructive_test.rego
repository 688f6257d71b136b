# METADATA
# title: Destructive statement tests
# description: DROP, TRUNCATE and unqualified DELETE/UPDATE need approval (DBA) or are denied (agents).
package pgwarden.destructive_test

import data.pgwarden.destructive
import data.pgwarden.fixtures_test as fx

verdicts(identity, facts) := {outcome.reason: outcome.effect | some outcome in outcomes} if {
	outcomes := destructive.outcomes with input as fx.input_for(identity, facts)
}

test_deny_drop_table if {
	drop := {"command": "DROP TABLE", "relations": [fx.relation("orders", "ddl")]}
	verdicts(fx.etl, drop) == {"destructive: DROP TABLE destroys data or schema": "deny"}
	verdicts(fx.dba, drop) == {"destructive: DROP TABLE destroys data or schema": "require_approval"}
}

test_deny_truncate if {
	truncate := {"command": "TRUNCATE TABLE", "relations": [fx.relation("orders", "write")]}
	verdicts(fx.etl, truncate) == {"destructive: TRUNCATE TABLE destroys data or schema": "deny"}
}

test_deny_delete_without_where if {
	delete := {"command": "DELETE", "relations": [fx.relation("orders", "write")]}
	verdicts(fx.etl, delete) == {"destructive: DELETE without WHERE changes every row of public.orders": "deny"}
	verdicts(fx.dba, delete) == {
		"destructive: DELETE without WHERE changes every row of public.orders": "require_approval",
	}
}

test_deny_update_without_where_in_a_cte if {
	update := fx.statement({"command": "UPDATE", "relations": [fx.relation("orders", "write")]})
	select := {"relations": [fx.relation("orders", "read")], "nested": [update]}
	verdicts(fx.etl, select) == {"destructive: UPDATE without WHERE changes every row of public.orders": "deny"}
}

test_allow_delete_and_update_with_where if {
	delete := {"command": "DELETE", "has_where": true, "relations": [fx.relation("orders", "write")]}
	verdicts(fx.etl, delete) == {}
	update := {"command": "UPDATE", "has_where": true, "relations": [fx.relation("orders", "write")]}
	verdicts(fx.etl, update) == {}
}

test_allow_create_is_not_destructive if {
	verdicts(fx.dba, {"command": "CREATE TABLE"}) == {}
}
