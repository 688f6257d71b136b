# METADATA
# title: Masking tests
# description: Classification x profile gives a mask per column, or a deny for denied classes.
package pgwarden.masking_test

import data.pgwarden.fixtures_test as fx
import data.pgwarden.masking

verdicts(identity, facts) := {outcome.reason: outcome.effect | some outcome in outcomes} if {
	outcomes := masking.outcomes with input as fx.input_for(identity, facts)
}

masks(identity, facts) := {outcome.column: outcome.mask | some outcome in outcomes; outcome.effect == "mask"} if {
	outcomes := masking.outcomes with input as fx.input_for(identity, facts)
}

contact := {
	"relations": [fx.relation("customers", "read")],
	"columns": [
		fx.column("customers", "full_name", "output"),
		fx.column("customers", "email", "output"),
		fx.column("customers", "phone", "output"),
	],
	"outputs": [fx.output("customers", "full_name"), fx.output("customers", "email"), fx.output("customers", "phone")],
	"has_where": true, "limit": 10,
}

test_deny_pii_returned_masked_by_type_for_reporting if {
	masks(fx.reporting, contact) == {
		"public.customers.email": "partial_email",
		"public.customers.phone": "last4",
		"public.customers.full_name": "redact",
	}
}

test_deny_pii_returned_hashed_for_etl if {
	masks(fx.etl, contact) == {
		"public.customers.email": "hash",
		"public.customers.phone": "hash",
		"public.customers.full_name": "hash",
	}
}

test_allow_pii_in_clear_for_dba if {
	verdicts(fx.dba, contact) == {}
}

test_deny_masks_columns_of_select_star if {
	star := {"relations": [fx.relation("payments", "read")], "star": ["public.payments"]}
	verdicts(fx.reporting, star) == {
		"masking: public.payments.card_number is secret and may not be read by this identity": "deny",
	}
}

test_allow_unclassified_columns_unmasked if {
	ids := {"columns": [fx.column("orders", "total", "output")], "outputs": [fx.output("orders", "total")]}
	verdicts(fx.reporting, ids) == {}
}

test_deny_secret_column_for_agents if {
	ssn := {"columns": [fx.column("customers", "ssn", "output")], "outputs": [fx.output("customers", "ssn")]}
	verdicts(fx.reporting, ssn) == {"masking: public.customers.ssn is secret and may not be read by this identity": "deny"}
	verdicts(fx.etl, ssn) == {"masking: public.customers.ssn is secret and may not be read by this identity": "deny"}
}

test_allow_writing_a_secret_column if {
	insert := {"command": "INSERT", "columns": [fx.column("payments", "card_number", "write")]}
	verdicts(fx.etl, insert) == {}
}

test_allow_secret_column_for_dba if {
	ssn := {"columns": [fx.column("customers", "ssn", "output")], "outputs": [fx.output("customers", "ssn")]}
	verdicts(fx.dba, ssn) == {}
}

test_deny_expression_over_masked_column if {
	upper_email := {"columns": [fx.column("customers", "email", "output")], "outputs": [fx.derived("customers", "email")]}
	verdicts(fx.reporting, upper_email) == {
		"masking: an expression over public.customers.email would bypass its mask; select the column itself": "deny",
		"masking: public.customers.email is returned masked with partial_email": "mask",
	}
}

test_allow_expression_over_unmasked_column if {
	upper_email := {"columns": [fx.column("customers", "email", "output")], "outputs": [fx.derived("customers", "email")]}
	verdicts(fx.dba, upper_email) == {}
}

test_deny_class_without_function_for_the_type_gets_null if {
	probe := {"probe": {"match": {"subjects": ["agent:probe"]}, "masks": {"pii": {"email": "hash"}}}}
	outcomes := masking.outcomes with input as fx.input_for({"subject": "agent:probe"}, contact)
		with data.data.identities.profiles as probe
	{outcome.column: outcome.mask | some outcome in outcomes} == {
		"public.customers.email": "hash",
		"public.customers.phone": "null",
		"public.customers.full_name": "null",
	}
}

test_deny_unknown_mask_function if {
	probe := {"probe": {"match": {"subjects": ["agent:probe"]}, "masks": {"pii": {"*": "scramble"}}}}
	email := {"columns": [fx.column("customers", "email", "output")], "outputs": [fx.output("customers", "email")]}
	outcomes := masking.outcomes with input as fx.input_for({"subject": "agent:probe"}, email)
		with data.data.identities.profiles as probe
	reason := `masking: unknown mask function "scramble" for public.customers.email in policies/data`
	{"effect": "deny", "reason": reason, "cache_ttl_s": 60} in outcomes
}

test_allow_known_mask_functions if {
	every profile in data.data.identities.profiles {
		every functions in profile.masks {
			every function in functions {
				data.data.masking.strength[function]
			}
		}
	}
}

# Every classified column of the shop database, and public.orders.total (not classified),
# read by one statement: protected_column judges the columns of facts.references only.
read_everything := {"columns": array.concat(
	[{"relation": relation, "column": column, "usage": "output"} |
		some relation, columns in data.data.classification.databases.shop
		some column, _ in columns
	],
	[fx.column("orders", "total", "output")],
)}

# The columns of read_everything that are protected_column for the identity.
protected_columns(identity) := protected if {
	protected := {column |
		some ref in read_everything.columns
		column := concat(".", [ref.relation, ref.column])
		masking.protected_column(column)
	} with input as fx.input_for(identity, read_everything)
}

test_deny_protected_columns_of_reporting if {
	protected_columns(fx.reporting) == {
		"public.customers.full_name", "public.customers.email", "public.customers.phone",
		"public.customers.ssn", "public.payments.card_number",
	}
}

test_allow_nothing_protected_for_dba if {
	protected_columns(fx.dba) == set()
}

# A class entry without a function for the column's type and without "*" gets "null":
# unknown as well when data.data.masking.strength does not list it.
test_deny_unknown_null_mask if {
	probe := {"probe": {"match": {"subjects": ["agent:probe"]}, "masks": {"pii": {"phone": "last4"}}}}
	email := {"columns": [fx.column("customers", "email", "output")], "outputs": [fx.output("customers", "email")]}
	outcomes := masking.outcomes with input as fx.input_for({"subject": "agent:probe"}, email)
		with data.data.identities.profiles as probe
		with data.data.masking.strength as {"last4": 1}
	reason := `masking: unknown mask function "null" for public.customers.email in policies/data`
	{"effect": "deny", "reason": reason, "cache_ttl_s": 60} in outcomes
}

# SELECT query_to_xml('SELECT email, phone FROM customers WHERE id = 42 LIMIT 1', true,
# false, '') WHERE true LIMIT 1, as the analyzer describes it: the inner statement is
# nested, its relations, columns and functions rolled up into the outer one, whose only
# output (the XML document) has no sources.
inner_contact := fx.statement({
	"relations": [fx.relation("customers", "read")],
	"columns": [
		fx.column("customers", "email", "output"),
		fx.column("customers", "id", "filter"),
		fx.column("customers", "phone", "output"),
	],
	"outputs": [fx.output("customers", "email"), fx.output("customers", "phone")],
	"has_where": true, "limit": 1,
})

run_inside(function, inner) := {
	"relations": inner.relations,
	"columns": inner.columns,
	"outputs": [{"name": "xml", "sources": [], "direct": false}],
	"functions": array.concat([function], inner.functions),
	"has_where": true, "limit": 1,
	"nested": [inner],
}

cannot_follow(column, function) := sprintf(
	"masking: %s is read by a statement that %s runs; the mask cannot follow into the function's output",
	[column, function],
)

test_deny_masked_column_returned_through_query_to_xml if {
	verdicts(fx.reporting, run_inside("pg_catalog.query_to_xml", inner_contact)) == {
		cannot_follow("public.customers.email", "pg_catalog.query_to_xml"): "deny",
		cannot_follow("public.customers.phone", "pg_catalog.query_to_xml"): "deny",
		"masking: public.customers.email is returned masked with partial_email": "mask",
		"masking: public.customers.phone is returned masked with last4": "mask",
	}
	verdicts(fx.etl, run_inside("pg_catalog.query_to_xml_and_xmlschema", inner_contact)) == {
		cannot_follow("public.customers.email", "pg_catalog.query_to_xml_and_xmlschema"): "deny",
		cannot_follow("public.customers.phone", "pg_catalog.query_to_xml_and_xmlschema"): "deny",
		"masking: public.customers.email is returned masked with hash": "mask",
		"masking: public.customers.phone is returned masked with hash": "mask",
	}
}

# ts_stat('SELECT to_tsvector(email) FROM customers'): derived, and inside the function.
test_deny_masked_column_inside_ts_stat if {
	inner := fx.statement({
		"relations": [fx.relation("customers", "read")],
		"columns": [fx.column("customers", "email", "output")],
		"outputs": [fx.derived("customers", "email")],
		"functions": ["pg_catalog.to_tsvector"],
	})
	verdicts(fx.reporting, run_inside("pg_catalog.ts_stat", inner)) == {
		cannot_follow("public.customers.email", "pg_catalog.ts_stat"): "deny",
		"masking: an expression over public.customers.email would bypass its mask; select the column itself": "deny",
		"masking: public.customers.email is returned masked with partial_email": "mask",
	}
}

# The statement a function runs may be nested deeper: EXPLAIN ANALYZE SELECT query_to_xml(...).
test_deny_masked_column_through_a_function_in_a_nested_statement if {
	select := fx.statement(run_inside("pg_catalog.query_to_xml", inner_contact))
	explain := object.union(run_inside("pg_catalog.query_to_xml", inner_contact), {
		"command": "EXPLAIN", "outputs": [], "nested": [select],
	})
	denied := {reason | some reason, "deny" in verdicts(fx.reporting, explain)}
	denied == {
		cannot_follow("public.customers.email", "pg_catalog.query_to_xml"),
		cannot_follow("public.customers.phone", "pg_catalog.query_to_xml"),
	}
}

test_allow_query_to_xml_for_dba_and_over_unclassified_columns if {
	verdicts(fx.dba, run_inside("pg_catalog.query_to_xml", inner_contact)) == {}
	inner_orders := fx.statement({
		"relations": [fx.relation("orders", "read")],
		"columns": [fx.column("orders", "total", "output")],
		"outputs": [fx.output("orders", "total")],
	})
	verdicts(fx.reporting, run_inside("pg_catalog.query_to_xml", inner_orders)) == {}
}

# Statements whose rows the proxy does see stay masked: a CTE or subquery (not a nested
# statement: its columns are the outer outputs' sources), PREPARE (its rows come back
# through EXECUTE), and a function call beside a masked column of the outer statement.
test_allow_masked_column_of_cte_subquery_and_prepare_stays_masked if {
	cte := {
		"relations": [fx.relation("customers", "read")],
		"columns": [fx.column("customers", "email", "output"), fx.column("customers", "id", "filter")],
		"outputs": [{"name": "e", "sources": ["public.customers.email"], "direct": true}],
		"has_where": true, "limit": 1,
	}
	masked := {"masking: public.customers.email is returned masked with partial_email": "mask"}
	verdicts(fx.reporting, cte) == masked
	prepare := object.union(run_inside("pg_catalog.query_to_xml", inner_contact), {
		"command": "PREPARE", "outputs": [], "functions": [],
	})
	verdicts(fx.reporting, prepare) == object.union(masked, {
		"masking: public.customers.phone is returned masked with last4": "mask",
	})
	inner_orders := fx.statement({"relations": [fx.relation("orders", "read")]})
	beside := object.union(cte, {"functions": ["pg_catalog.query_to_xml"], "nested": [inner_orders]})
	verdicts(fx.reporting, beside) == masked
}

# SELECT ts_rewrite('a'::tsquery, 'select email::tsquery, email::tsquery from customers'),
# as the analyzer describes it: the two-argument form runs its second argument, a nested
# statement whose rows (target, substitute) come back inside the rewritten tsquery.
ts_rewrite_select := {
	"sql_normalized": "SELECT ts_rewrite($1::tsquery, $2)",
	"relations": [fx.relation("customers", "read")],
	"columns": [fx.column("customers", "email", "output")],
	"outputs": [{"name": "ts_rewrite", "sources": [], "direct": false}],
	"functions": ["pg_catalog.ts_rewrite"],
	"nested": [fx.statement({
		"sql_normalized": "select email::tsquery, email::tsquery from customers",
		"relations": [fx.relation("customers", "read")],
		"columns": [fx.column("customers", "email", "output")],
		"outputs": [fx.derived("customers", "email"), fx.derived("customers", "email")],
	})],
}

test_deny_masked_column_returned_through_ts_rewrite if {
	verdicts(fx.reporting, ts_rewrite_select) == {
		cannot_follow("public.customers.email", "pg_catalog.ts_rewrite"): "deny",
		"masking: an expression over public.customers.email would bypass its mask; select the column itself": "deny",
		"masking: public.customers.email is returned masked with partial_email": "mask",
	}
	verdicts(fx.etl, ts_rewrite_select) == {
		cannot_follow("public.customers.email", "pg_catalog.ts_rewrite"): "deny",
		"masking: an expression over public.customers.email would bypass its mask; select the column itself": "deny",
		"masking: public.customers.email is returned masked with hash": "mask",
	}
}

# SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery): the three-argument form
# runs no SQL (no nested statement), and reads nothing.
test_allow_ts_rewrite_of_three_arguments_and_for_dba if {
	three := {
		"sql_normalized": "SELECT ts_rewrite($1::tsquery, $2::tsquery, $3::tsquery)",
		"outputs": [{"name": "ts_rewrite", "sources": [], "direct": false}],
		"functions": ["pg_catalog.ts_rewrite"],
	}
	verdicts(fx.reporting, three) == {}
	verdicts(fx.etl, three) == {}
	verdicts(fx.dba, ts_rewrite_select) == {}
}

statistics(name) := {"relations": [{"schema": "pg_catalog", "name": name, "kind": "view", "access": "read"}]}

test_deny_planner_statistics_for_restricted_identities if {
	every name in data.data.settings.statistics_relations.pg_catalog {
		reason := sprintf(
			"masking: pg_catalog.%s holds sample values of classified columns (planner statistics) that no mask covers",
			[name],
		)
		verdicts(fx.reporting, statistics(name)) == {reason: "deny"}
		verdicts(fx.etl, statistics(name)) == {reason: "deny"}
	}
	{"pg_stats", "pg_stats_ext", "pg_stats_ext_exprs", "pg_statistic", "pg_statistic_ext_data"} == {name |
		some name in data.data.settings.statistics_relations.pg_catalog
	}
}

test_allow_planner_statistics_for_dba_and_other_catalog_relations if {
	verdicts(fx.dba, statistics("pg_stats")) == {}
	verdicts(fx.reporting, statistics("pg_class")) == {}
	own_table := {"schema": "public", "name": "pg_stats", "kind": "table", "access": "read"}
	verdicts(fx.reporting, {"relations": [own_table]}) == {}
}

# SELECT email FROM customers WHERE id = 42 UNION ALL SELECT status FROM orders WHERE id = 1
mixed := {
	"relations": [fx.relation("customers", "read"), fx.relation("orders", "read")],
	"columns": [
		fx.column("customers", "email", "output"), fx.column("customers", "id", "filter"),
		fx.column("orders", "id", "filter"), fx.column("orders", "status", "output"),
	],
	"outputs": [{"name": "email", "sources": ["public.customers.email", "public.orders.status"], "direct": true}],
	"has_where": true, "limit": 5,
}

test_deny_a_masked_column_returned_in_one_column_with_others if {
	reason := concat("", [
		"masking: public.customers.email is returned in one column with public.orders.status ",
		"(a set operation): its mask would apply to them too; return them apart",
	])
	verdicts(fx.etl, mixed)[reason] == "deny"
	verdicts(fx.reporting, mixed)[reason] == "deny"
}

test_allow_columns_in_one_output_when_none_is_masked if {
	every verdict in verdicts(fx.dba, mixed) {
		verdict != "deny"
	}
	totals := object.union(mixed, {"outputs": [{
		"name": "id",
		"sources": ["public.customers.id", "public.orders.id"],
		"direct": true,
	}]})
	every reason, _ in verdicts(fx.reporting, totals) {
		not contains(reason, "in one column with")
	}
}

unknown_relation(access) := {"relations": [
	{"schema": "public", "name": "contact_book", "kind": "unknown", "access": access},
]}

test_deny_reading_a_relation_the_catalog_does_not_know_to_restricted_identities if {
	reason := concat("", [
		"masking: public.contact_book is not in the proxy's schema catalog (created since it was read?), ",
		"so its columns cannot be masked; retry in a few seconds",
	])
	verdicts(fx.reporting, unknown_relation("read")) == {reason: "deny"}
	verdicts(fx.etl, unknown_relation("read")) == {reason: "deny"}
}

test_allow_unknown_relation_for_dba_and_when_not_read if {
	verdicts(fx.dba, unknown_relation("read")) == {}
	verdicts(fx.etl, unknown_relation("write")) == {}
	verdicts(fx.reporting, unknown_relation("ddl")) == {}
}

# restricted: a profile that masks a class without denying any is restricted too.
test_deny_restricted_with_masks_only if {
	probe := {"probe": {"match": {"subjects": ["agent:probe"]}, "denied_classes": [], "masks": {"pii": {"*": "hash"}}}}
	masking.restricted with input as fx.input_for({"subject": "agent:probe"}, {})
		with data.data.identities.profiles as probe
	masking.restricted with input as fx.input_for(fx.reporting, {})
}

test_allow_unrestricted_dba if {
	not masking.restricted with input as fx.input_for(fx.dba, {})
}
