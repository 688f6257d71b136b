# METADATA
# title: Statement facts tests
# description: Nested statements, qualified names, classification lookups and column references.
package pgwarden.facts_test

import data.pgwarden.facts
import data.pgwarden.fixtures_test as fx

statements_of(facts_in) := {statement.command | some statement in result} if {
	result := facts.statements with input as fx.input_for(fx.reporting, facts_in)
}

test_allow_nested_statements_at_any_depth if {
	inner := fx.statement({"command": "SELECT"})
	prepare := fx.statement({"command": "PREPARE", "nested": [inner]})
	statements_of({"command": "DO", "nested": [prepare, fx.statement({"command": "COPY"})]}) == {
		"DO", "PREPARE", "SELECT", "COPY",
	}
}

# Deeper than the two levels read directly (facts.nested_1, nested_2): the walk below them.
test_allow_nested_statements_deeper_than_two_levels if {
	level_5 := fx.statement({"command": "DELETE"})
	level_4 := fx.statement({"command": "EXECUTE", "nested": [level_5, fx.statement({"command": "FETCH"})]})
	level_3 := fx.statement({"command": "PREPARE", "nested": [level_4]})
	level_2 := fx.statement({"command": "EXPLAIN", "nested": [level_3]})
	level_1 := fx.statement({"command": "DECLARE CURSOR", "nested": [level_2]})
	statements_of({"command": "DO", "nested": [level_1]}) == {
		"DO", "DECLARE CURSOR", "EXPLAIN", "PREPARE", "EXECUTE", "DELETE", "FETCH",
	}
}

# Only objects in "nested" lists are statements, at every depth: not a "nested" that is
# an object, not a list inside a list, not an object under another key.
test_deny_malformed_nested_lists_hold_no_statements if {
	hidden := fx.statement({"command": "DROP TABLE"})
	odd := {
		"nested": {"0": hidden}, "copy": {"nested": [hidden]},
		"relations": [{"nested": [hidden]}],
	}
	level_3 := fx.statement(object.union(odd, {"command": "SELECT"}))
	level_4 := fx.statement({"command": "FETCH", "nested": [1, [hidden], level_3]})
	level_2 := fx.statement({"command": "EXPLAIN", "nested": ["x", [hidden], level_4]})
	level_1 := fx.statement({"command": "PREPARE", "nested": [null, level_2]})
	statements_of(object.union(odd, {"command": "DO", "nested": [level_1]})) == {
		"DO", "PREPARE", "EXPLAIN", "FETCH", "SELECT",
	}
}

test_deny_objects_outside_nested_lists_are_not_statements if {
	copy := {
		"command": "COPY", "copy": fx.copy_to("stdout", "public.orders"),
		"relations": [fx.relation("orders", "read")],
	}
	statements_of(copy) == {"COPY"}
}

test_allow_function_name_without_schema if {
	facts.function_name("pg_catalog.lo_export") == "lo_export"
	facts.function_name("lo_export") == "lo_export"
}

test_allow_classified_columns_of_the_session_database if {
	columns := facts.classified_columns with input as fx.input_for(fx.reporting, {})
	columns["public.customers.email"] == {"class": "pii", "type": "email"}
	count(columns) == 5
	relations := facts.classified_relations with input as fx.input_for(fx.reporting, {})
	relations == {"public.customers", "public.payments"}
}

test_deny_no_classification_for_an_unknown_database if {
	crm := object.union(fx.input_for(fx.reporting, {}), {"session": {"database": "crm"}})
	columns := facts.classified_columns with input as crm
	columns == {}
}

test_allow_column_refs_from_columns_outputs_and_star if {
	statement := fx.statement({
		"relations": [fx.relation("payments", "read")],
		"columns": [fx.column("orders", "total", "group")],
		"outputs": [fx.output("customers", "email"), fx.derived("customers", "phone")],
		"star": ["public.payments"],
	})
	refs := facts.column_refs(statement) with input as fx.input_for(fx.reporting, {})
	refs == {
		{"column": "public.orders.total", "usage": "group"},
		{"column": "public.customers.email", "usage": "output"},
		{"column": "public.customers.phone", "usage": "derived"},
		{"column": "public.payments.card_number", "usage": "output"},
	}
}

test_deny_star_of_a_written_relation_is_not_a_read if {
	load := fx.statement({
		"command": "COPY",
		"relations": [fx.relation("customers", "write")],
		"star": ["public.customers"],
	})
	facts.starred_reads(load) == set()
	refs := facts.column_refs(load) with input as fx.input_for(fx.etl, {})
	refs == set()
}

test_allow_references_include_nested_statements if {
	inner := fx.statement({"columns": [fx.column("customers", "ssn", "filter")]})
	refs := facts.references with input as fx.input_for(fx.reporting, {"nested": [inner]})
	refs == {{"column": "public.customers.ssn", "usage": "filter"}}
}

test_deny_controlled_outcome_when_mode_denies if {
	facts.controlled("deny", "r") == {"effect": "deny", "reason": "r", "cache_ttl_s": 60}
	facts.controlled("require_approval", "r").effect == "require_approval"
}

test_allow_no_controlled_outcome_when_mode_allows if {
	not facts.controlled("allow", "r")
}

test_deny_no_statements_without_a_statement if {
	no_statement := object.remove(fx.input_for(fx.reporting, {}), {"statement"})
	facts.statements == [] with input as no_statement
}

# The entry of classified_columns for every referenced column that has one, found at the
# dot between relation and column; other columns (id) have none.
test_allow_referenced_classification_of_referenced_columns_only if {
	read := {
		"columns": [fx.column("customers", "id", "output"), fx.column("customers", "email", "filter")],
		"outputs": [fx.output("customers", "id"), fx.output("payments", "card_number")],
	}
	found := facts.referenced_classification with input as fx.input_for(fx.reporting, read)
	columns := facts.classified_columns with input as fx.input_for(fx.reporting, read)
	found == {
		"public.customers.email": columns["public.customers.email"],
		"public.payments.card_number": columns["public.payments.card_number"],
	}
}
