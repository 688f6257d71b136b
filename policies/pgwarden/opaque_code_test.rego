# METADATA
# title: Opaque code tests
# description: Code the proxy cannot see is refused for agents.
package pgwarden.opaque_code_test

import data.pgwarden.fixtures_test as fx
import data.pgwarden.opaque_code

verdicts(identity, facts) := {outcome.reason: outcome.effect | some outcome in outcomes} if {
	outcomes := opaque_code.outcomes with input as fx.input_for(identity, facts)
}

test_deny_unresolved_dynamic_sql if {
	execute := {"command": "EXECUTE", "unresolved": true}
	verdicts(fx.reporting, execute) == {"opaque code: dynamic SQL in EXECUTE could not be resolved": "deny"}
	verdicts(fx.dba, execute) == {"opaque code: dynamic SQL in EXECUTE could not be resolved": "require_approval"}
}

test_deny_unresolved_nested_statement if {
	block := {"command": "DO", "nested": [fx.statement({"command": "EXECUTE", "unresolved": true})]}
	verdicts(fx.dba, block) == {"opaque code: dynamic SQL in EXECUTE could not be resolved": "require_approval"}
}

test_allow_resolved_execute if {
	execute := {"command": "EXECUTE", "nested": [fx.statement({"command": "SELECT"})]}
	verdicts(fx.reporting, execute) == {}
}

test_deny_unknown_command if {
	verdicts(fx.reporting, {"command": "unknown"}) == {"opaque code: the analyzer does not know this command": "deny"}
	verdicts(fx.dba, {"command": "unknown"}) == {
		"opaque code: the analyzer does not know this command": "require_approval",
	}
}

test_deny_do_block_for_agents if {
	verdicts(fx.etl, {"command": "DO"}) == {
		"opaque code: a DO block runs procedural code whose output bypasses masks and row limits": "deny",
	}
}

test_allow_resolved_do_block_for_dba if {
	verdicts(fx.dba, {"command": "DO", "nested": [fx.statement({})]}) == {}
}

test_deny_function_creation if {
	verdicts(fx.reporting, {"command": "CREATE FUNCTION"}) == {
		"opaque code: CREATE FUNCTION stores code that later runs unseen by the proxy": "deny",
	}
	verdicts(fx.dba, {"command": "CREATE TRIGGER"}) == {
		"opaque code: CREATE TRIGGER stores code that later runs unseen by the proxy": "require_approval",
	}
}

test_allow_create_table if {
	verdicts(fx.dba, {"command": "CREATE TABLE"}) == {}
}

test_deny_user_defined_function_for_agents if {
	verdicts(fx.reporting, {"functions": ["public.customer_report"]}) == {
		"opaque code: public.customer_report is a user-defined function whose body the proxy cannot see": "deny",
	}
	verdicts(fx.reporting, {"functions": ["lower"]}) == {
		"opaque code: lower is a user-defined function whose body the proxy cannot see": "deny",
	}
}

test_allow_catalog_functions_for_agents_and_user_functions_for_dba if {
	verdicts(fx.reporting, {"functions": ["pg_catalog.lower", "information_schema._pg_char_max_length"]}) == {}
	verdicts(fx.dba, {"functions": ["public.customer_report"]}) == {}
}
