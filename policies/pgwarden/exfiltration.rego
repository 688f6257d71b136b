# METADATA
# title: Exfiltration
# description: |
#   Ways to move data out in bulk or around the proxy: COPY ... TO (STDOUT, PROGRAM,
#   FILE, and COPY (query) TO), COPY ... PROGRAM/FILE in either direction, SELECT * and
#   unbounded reads of classified data, server file and large-object functions, dblink
#   and postgres_fdw, and protected columns used anywhere but in the output or a write
#   (filter, join, order, group, limit, from), which act as an oracle. All are governed
#   by the "export" control of the identity's profiles.
package pgwarden.exfiltration

import data.pgwarden.facts
import data.pgwarden.identities
import data.pgwarden.masking

# METADATA
# title: outcomes
# description: What exfiltration rules contribute to the decision.
# scope: document
outcomes contains outcome if {
	some statement in facts.statements
	statement.copy.direction == "to"
	target := upper(statement.copy.target)
	reason := sprintf("exfiltration: COPY %s TO %s exports data", [copy_source(statement.copy), target])
	outcome := facts.controlled(identities.mode.export, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	statement.copy.target in {"program", "file"}
	reason := sprintf("exfiltration: COPY ... %s runs on the database server", [upper(statement.copy.target)])
	outcome := facts.controlled(identities.mode.export, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	some relation in statement.star # starred_reads only for a statement with a star
	relation in facts.starred_reads(statement)
	relation in facts.classified_relations
	reason := sprintf("exfiltration: SELECT * of classified relation %s; name the columns", [relation])
	outcome := facts.controlled(identities.mode.export, reason)
}

# Whether the statement is unbounded first (a bounded one stops there, before its
# references); column_refs is computed once per statement and query, whichever
# rule calls it first.
outcomes contains outcome if {
	some statement in facts.statements
	why := unbounded(statement)
	columns := {ref.column |
		some ref in facts.column_refs(statement)
		ref.usage in {"output", "derived"}
		facts.referenced_classification[ref.column]
	}
	count(columns) > 0
	not statement in unreturned
	reason := sprintf("exfiltration: unbounded read (%s) of classified %s", [why, concat(", ", sort(columns))])
	outcome := facts.controlled(identities.mode.export, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	some function in statement.functions
	file_function(function)
	reason := sprintf("exfiltration: %s reads or writes files on the database server", [function])
	outcome := facts.controlled(identities.mode.export, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	some function in statement.functions
	remote_function(function)
	reason := sprintf("exfiltration: %s connects to another server", [function])
	outcome := facts.controlled(identities.mode.export, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	remote_command(statement.command)
	reason := sprintf("exfiltration: %s links the database to another server", [statement.command])
	outcome := facts.controlled(identities.mode.export, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	some relation in statement.relations
	relation.kind == "foreign_table"
	relation.access == "write"
	name := facts.relation_name(relation)
	reason := sprintf("exfiltration: writing to foreign table %s sends rows to another server", [name])
	outcome := facts.controlled(identities.mode.export, reason)
}

# An oracle: any use of a protected column other than returning it (masked, "output") or
# writing into it. filter (WHERE, HAVING, FILTER), join, order (ORDER BY, window ORDER BY,
# ordered aggregates), group (GROUP BY, grouping sets, DISTINCT ON, PARTITION BY, DISTINCT,
# UNION, INTERSECT, EXCEPT), limit (LIMIT, OFFSET, window frames) and from (FROM-function
# and TABLESAMPLE arguments, computed subquery columns) make the result depend on the
# clear value: GROUP BY substr(email, p, 1) beside labelled rows spells out the whole
# column, LIMIT (SELECT ascii(ssn) ...) a character as a row count. A usage the analyzer
# may add later counts too (fail closed). "derived" (an expression in the output) is denied by masking.rego.
outcomes contains outcome if {
	some ref in facts.classified_references # a protected column is a classified one
	not ref.usage in {"output", "derived", "write"}
	masking.protected_column(ref.column)
	reason := sprintf("exfiltration: %s in a %s clause acts as an oracle on a protected column", [ref.column, ref.usage])
	outcome := facts.controlled(identities.mode.export, reason)
}

# Commands that link the database to another server. (The sets of command tags are
# written in functions, not in rules such as "remote_commands := {...}": a rule is
# evaluated and its set built on every query that reads it, while a set written in a
# function body is a constant of the compiled policy.)
remote_command(command) if command in {
	"CREATE SERVER", "ALTER SERVER", "CREATE FOREIGN DATA WRAPPER", "ALTER FOREIGN DATA WRAPPER",
	"CREATE FOREIGN TABLE", "ALTER FOREIGN TABLE", "CREATE USER MAPPING", "ALTER USER MAPPING",
	"IMPORT FOREIGN SCHEMA",
}

# The function lists of data.data.functions are read in functions, not in the rules: a
# rule that reads data.data.functions makes OPA's rule index read it on every query,
# functions or not; a function reads it only for a statement that calls one.
file_function(function) if {
	some kind in {"server_files", "large_objects"}
	facts.function_name(function) in data.data.functions[kind]
}

remote_function(function) if facts.function_name(function) in data.data.functions.remote_access

copy_source(copy) := "(query)" if {
	copy.query == true
} else := copy.relation

# Statements whose rows this statement does not return: DECLARE and PREPARE only name a
# query (their one nested statement) and MOVE skips a cursor's rows. The read is judged
# when FETCH or EXECUTE returns rows: the analyzer gives both the statement and its copy
# of the query the limit of the rows it returns (the FETCH count, EXECUTE's LIMIT argument).
unreturned contains input.statement if deferring_command(input.statement.command)

unreturned contains statement if {
	deferring_command(input.statement.command)
	some statement in input.statement.nested
}

deferring_command(command) if command in {"DECLARE CURSOR", "PREPARE", "MOVE"}

# Why a read is unbounded: no WHERE, no LIMIT, or a LIMIT above settings.bulk_read_limit.
unbounded(statement) := "no WHERE clause" if {
	not statement.has_where
} else := "no LIMIT" if {
	not is_number(statement.limit)
} else := sprintf("LIMIT %d above %d", [statement.limit, data.data.settings.bulk_read_limit]) if {
	statement.limit > data.data.settings.bulk_read_limit
}
