# METADATA
# title: Exfiltration tests
# description: Each exfiltration rule denies agents, asks approval of the DBA, and lets bounded work through.
package pgwarden.exfiltration_test

import data.pgwarden.exfiltration
import data.pgwarden.fixtures_test as fx

# The reasons of the exfiltration outcomes for one identity and statement, with their effects.
verdicts(identity, facts) := {outcome.reason: outcome.effect | some outcome in outcomes} if {
	outcomes := exfiltration.outcomes with input as fx.input_for(identity, facts)
}

copy_customers := {
	"command": "COPY", "read_only": true,
	"relations": [fx.relation("customers", "read")],
	"copy": fx.copy_to("stdout", "public.customers"),
}

test_deny_copy_to_stdout_for_agents if {
	verdicts(fx.reporting, copy_customers) == {"exfiltration: COPY public.customers TO STDOUT exports data": "deny"}
	verdicts(fx.etl, copy_customers) == {"exfiltration: COPY public.customers TO STDOUT exports data": "deny"}
}

test_deny_copy_query_to_stdout_needs_approval_for_dba if {
	query := {"direction": "to", "target": "stdout", "relation": "", "query": true}
	copy_query := object.union(copy_customers, {"copy": query})
	verdicts(fx.dba, copy_query) == {"exfiltration: COPY (query) TO STDOUT exports data": "require_approval"}
}

test_allow_copy_from_stdin if {
	copy_in := {
		"command": "COPY", "read_only": false,
		"relations": [fx.relation("orders", "write")],
		"copy": {"direction": "from", "target": "stdin", "relation": "public.orders", "query": false},
	}
	count(verdicts(fx.etl, copy_in)) == 0
}

test_deny_copy_program_runs_on_the_server if {
	copy_program := {
		"command": "COPY", "read_only": false,
		"relations": [fx.relation("orders", "write")],
		"copy": {"direction": "from", "target": "program", "relation": "public.orders", "query": false},
	}
	verdicts(fx.etl, copy_program) == {"exfiltration: COPY ... PROGRAM runs on the database server": "deny"}
	verdicts(fx.dba, copy_program) == {"exfiltration: COPY ... PROGRAM runs on the database server": "require_approval"}
}

test_deny_copy_to_file if {
	copy_file := object.union(copy_customers, {"copy": fx.copy_to("file", "public.customers")})
	verdicts(fx.reporting, copy_file) == {
		"exfiltration: COPY public.customers TO FILE exports data": "deny",
		"exfiltration: COPY ... FILE runs on the database server": "deny",
	}
}

star_customers := {
	"relations": [fx.relation("customers", "read")],
	"star": ["public.customers"], "has_where": true, "limit": 10,
}

test_deny_select_star_of_classified_relation if {
	verdicts(fx.reporting, star_customers) == {
		"exfiltration: SELECT * of classified relation public.customers; name the columns": "deny",
	}
}

test_allow_select_star_of_unclassified_relation if {
	star_orders := {"relations": [fx.relation("orders", "read")], "star": ["public.orders"]}
	count(verdicts(fx.reporting, star_orders)) == 0
}

emails(where, limit) := {
	"relations": [fx.relation("customers", "read")],
	"columns": [fx.column("customers", "email", "output"), fx.column("customers", "id", "filter")],
	"outputs": [fx.output("customers", "email")],
	"has_where": where, "limit": limit,
}

test_deny_unbounded_read_without_where if {
	verdicts(fx.reporting, emails(false, 10)) == {
		"exfiltration: unbounded read (no WHERE clause) of classified public.customers.email": "deny",
	}
}

test_deny_unbounded_read_without_limit if {
	verdicts(fx.etl, emails(true, null)) == {
		"exfiltration: unbounded read (no LIMIT) of classified public.customers.email": "deny",
	}
}

test_deny_unbounded_read_with_limit_above_threshold if {
	verdicts(fx.dba, emails(true, 5000)) == {
		"exfiltration: unbounded read (LIMIT 5000 above 100) of classified public.customers.email": "require_approval",
	}
}

test_allow_bounded_read_of_classified_column if {
	count(verdicts(fx.reporting, emails(true, 100))) == 0
}

# A statement that runs the query of emails: the query nested as the analyzer nests it,
# its columns and outputs in the statement itself. For FETCH and EXECUTE, both have the
# limit of the rows the statement returns; DECLARE and PREPARE leave their query's own.
running(command, limit) := object.union(emails(true, limit), {
	"command": command,
	"nested": [fx.statement(emails(true, limit))],
})

# DECLARE and PREPARE of a query without LIMIT: nothing returned yet.
naming(command) := object.union(running(command, null), {"has_where": false, "outputs": []})

test_allow_declare_prepare_and_move_of_a_query_without_limit if {
	count(verdicts(fx.reporting, naming("DECLARE CURSOR"))) == 0
	count(verdicts(fx.reporting, naming("PREPARE"))) == 0
	count(verdicts(fx.reporting, naming("MOVE"))) == 0
}

test_allow_fetch_and_execute_of_bounded_rows if {
	count(verdicts(fx.reporting, running("FETCH", 10))) == 0
	count(verdicts(fx.etl, running("EXECUTE", 100))) == 0
}

test_deny_fetch_and_execute_of_unbounded_rows if {
	verdicts(fx.reporting, running("FETCH", null)) == {
		"exfiltration: unbounded read (no LIMIT) of classified public.customers.email": "deny",
	}
	verdicts(fx.etl, running("EXECUTE", 5000)) == {
		"exfiltration: unbounded read (LIMIT 5000 above 100) of classified public.customers.email": "deny",
	}
}

# A statement in EXECUTE's arguments (a SQL-text function's query) returns its rows there.
test_deny_unbounded_read_in_the_arguments_of_execute if {
	argument := fx.statement(object.union(emails(false, null), {"command": "SELECT"}))
	execute := object.union(running("EXECUTE", 10), {"nested": [fx.statement(emails(true, 10)), argument]})
	verdicts(fx.reporting, execute) == {
		"exfiltration: unbounded read (no WHERE clause) of classified public.customers.email": "deny",
	}
}

# Only the statement itself names what it runs: a nested DECLARE (inside DO, say) is judged.
test_deny_unbounded_read_nested_under_another_command if {
	block := {"command": "DO", "nested": [fx.statement(naming("DECLARE CURSOR"))]}
	reason := "exfiltration: unbounded read (no WHERE clause) of classified public.customers.email"
	verdicts(fx.reporting, block)[reason] == "deny"
}

test_allow_unbounded_read_of_unclassified_columns if {
	totals := {
		"relations": [fx.relation("customers", "read")],
		"columns": [fx.column("customers", "created_at", "output")],
		"outputs": [fx.output("customers", "created_at")],
	}
	count(verdicts(fx.reporting, totals)) == 0
}

functions(names) := {"functions": names}

test_deny_server_file_and_large_object_functions if {
	verdicts(fx.reporting, functions(["pg_catalog.pg_read_file", "pg_catalog.lo_export"])) == {
		"exfiltration: pg_catalog.pg_read_file reads or writes files on the database server": "deny",
		"exfiltration: pg_catalog.lo_export reads or writes files on the database server": "deny",
	}
}

test_allow_ordinary_catalog_functions if {
	count(verdicts(fx.reporting, functions(["pg_catalog.lower", "pg_catalog.now"]))) == 0
}

test_deny_dblink if {
	verdicts(fx.etl, functions(["public.dblink"])) == {"exfiltration: public.dblink connects to another server": "deny"}
}

test_deny_postgres_fdw_server_needs_approval_for_dba if {
	verdicts(fx.dba, {"command": "CREATE SERVER"}) == {
		"exfiltration: CREATE SERVER links the database to another server": "require_approval",
	}
}

test_allow_create_table_is_not_a_remote_link if {
	count(verdicts(fx.dba, {"command": "CREATE TABLE"})) == 0
}

test_deny_write_to_foreign_table if {
	insert_remote := {
		"command": "INSERT", "read_only": false,
		"relations": [{"schema": "public", "name": "remote_orders", "kind": "foreign_table", "access": "write"}],
	}
	verdicts(fx.etl, insert_remote) == {
		"exfiltration: writing to foreign table public.remote_orders sends rows to another server": "deny",
	}
}

test_allow_write_to_local_table if {
	insert := {"command": "INSERT", "read_only": false, "relations": [fx.relation("orders", "write")]}
	count(verdicts(fx.etl, insert)) == 0
}

probe(column) := {
	"relations": [fx.relation("customers", "read")],
	"columns": [fx.column("customers", "id", "output"), fx.column("customers", column, "filter")],
	"outputs": [fx.output("customers", "id")],
	"has_where": true, "limit": 1,
}

test_deny_filter_on_protected_column_is_an_oracle if {
	verdicts(fx.reporting, probe("ssn")) == {
		"exfiltration: public.customers.ssn in a filter clause acts as an oracle on a protected column": "deny",
	}
	verdicts(fx.reporting, probe("email")) == {
		"exfiltration: public.customers.email in a filter clause acts as an oracle on a protected column": "deny",
	}
}

test_allow_filter_on_column_read_in_clear if {
	count(verdicts(fx.dba, probe("ssn"))) == 0
	count(verdicts(fx.reporting, probe("created_at"))) == 0
}

# SELECT string_agg(s.k || '@' || p, ',') FROM (SELECT id::text AS k, email AS e FROM
# customers WHERE id > $1 UNION ALL SELECT 'L' || i, ...) s, generate_series(1, 40) p
# WHERE true GROUP BY substr(s.e, p, 1) LIMIT 100, as the analyzer describes it: each
# group names the customers whose e-mail has one character at one position.
group_by_character := {
	"relations": [fx.relation("customers", "read")],
	"columns": [
		fx.column("customers", "email", "group"),
		fx.column("customers", "id", "filter"),
		fx.column("customers", "id", "output"),
	],
	"outputs": [{"name": "string_agg", "sources": ["public.customers.id"], "direct": false}],
	"functions": ["pg_catalog.string_agg", "pg_catalog.substr"],
	"has_where": true, "limit": 100,
}

test_deny_grouping_by_protected_column_is_an_oracle if {
	reason := "exfiltration: public.customers.email in a group clause acts as an oracle on a protected column"
	verdicts(fx.reporting, group_by_character) == {reason: "deny"}
	verdicts(fx.etl, group_by_character) == {reason: "deny"}
}

# DISTINCT ON (phone) and PARTITION BY phone are "group" too; a window ORDER BY is "order".
test_deny_distinct_on_and_window_clauses_on_protected_columns if {
	window := {
		"relations": [fx.relation("customers", "read")],
		"columns": [
			fx.column("customers", "full_name", "order"),
			fx.column("customers", "id", "output"),
			fx.column("customers", "phone", "group"),
		],
		"outputs": [fx.output("customers", "id"), {"name": "rank", "sources": [], "direct": false}],
		"has_where": true, "limit": 10,
	}
	verdicts(fx.reporting, window) == {
		"exfiltration: public.customers.full_name in a order clause acts as an oracle on a protected column": "deny",
		"exfiltration: public.customers.phone in a group clause acts as an oracle on a protected column": "deny",
	}
}

# SELECT count(*) FROM generate_series(1, 1000) g WHERE g > 0 LIMIT (SELECT ascii(ssn)
# ...): a character as a number of rows ("limit"); count(*) over generate_series(1,
# ascii(email)) in FROM ("from") the same.
test_deny_protected_column_in_limit_and_from_is_an_oracle if {
	reason := "exfiltration: public.customers.ssn in a limit clause acts as an oracle on a protected column"
	verdicts(fx.reporting, probe_usage("ssn", "limit"))[reason] == "deny"
	verdicts(fx.etl, probe_usage("email", "from")) == {
		"exfiltration: public.customers.email in a from clause acts as an oracle on a protected column": "deny",
	}
	count(verdicts(fx.dba, probe_usage("ssn", "limit"))) == 0
}

# A usage the analyzer does not emit today is an oracle as well: only returning a column
# and writing into it are not.
test_deny_unknown_usage_of_protected_column if {
	verdicts(fx.reporting, probe_usage("email", "lookup")) == {
		"exfiltration: public.customers.email in a lookup clause acts as an oracle on a protected column": "deny",
	}
}

probe_usage(column, usage) := object.union(probe(column), {"columns": [
	fx.column("customers", "id", "output"),
	fx.column("customers", column, usage),
]})

test_allow_grouping_by_column_read_in_clear if {
	count(verdicts(fx.dba, group_by_character)) == 0
	count(verdicts(fx.reporting, probe_usage("created_at", "group"))) == 0
}

# The masked read itself is no oracle: output (masked by the proxy) and write.
test_allow_masked_output_and_write_of_protected_column if {
	count(verdicts(fx.reporting, probe_usage("email", "output"))) == 0
	count(verdicts(fx.etl, probe_usage("email", "write"))) == 0
}

test_deny_nested_copy_inside_explain if {
	explain := {"command": "EXPLAIN", "nested": [fx.statement(copy_customers)]}
	verdicts(fx.reporting, explain) == {"exfiltration: COPY public.customers TO STDOUT exports data": "deny"}
}
