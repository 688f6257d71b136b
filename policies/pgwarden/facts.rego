# METADATA
# title: Statement facts
# description: |
#   Shared views of the input document (contract v1) for the topic rules: the statement
#   and every statement nested in it, qualified names, the classification of the
#   session's database and the outcome objects that topic rules contribute.
package pgwarden.facts

# METADATA
# title: statements
# description: |
#   The statement and every statement nested in it (DO body, PREPARE, EXPLAIN ANALYZE,
#   a cursor's query), at any depth, so that every topic rule judges them all alike.
#   A nested statement is an object in a "nested" list; nothing else is a statement.
#   An array, input.statement first: iterate it (a nested statement equal to
#   input.statement is in it twice, which changes no set a rule builds).
# scope: document
default statements := []

# One complete rule, the common case first: a statement that nests nothing (most do not)
# is the only statement. As a partial set of four definitions (the statement, nested_1,
# nested_2, nested_deeper), each of the ~25 topic rules that iterate statements looked up
# the four: 2,100 -> 1,991 allocations per decision on the bench input. An array and not
# a set ({input.statement}): 1,821 -> 1,768 allocations on the bench input, every rule
# iterating it the same.
statements := [input.statement] if {
	is_object(input.statement)
	input.statement.nested == []
} else := array.concat([input.statement], [statement | some statement in ((nested_1 | nested_2) | nested_deeper)]) if {
	is_object(input.statement)
}

# Why levels and not walk(input.statement): walk visits every node of the document
# (every relation, column and output of every statement) and was the largest cost of a
# decision. The analyzer nests statements at most 16 deep (proxy/analysis/facts.py,
# _MAX_NESTING) and real statements one or two deep (DO, PREPARE, EXECUTE, EXPLAIN, a
# cursor): the first two levels are read directly, only deeper ones are walked.
nested_1 contains statement if {
	is_array(input.statement.nested)
	some statement in input.statement.nested
	is_object(statement)
}

# The levels iterate the "nested" lists in the rule bodies, not through a function
# (children(statement) before): a call per parent cost more than the iteration itself.
nested_2 contains statement if {
	some parent in nested_1
	is_array(parent.nested)
	some statement in parent.nested
	is_object(statement)
}

# Depth 3 and more: walk the nested lists of the depth-2 statements. A statement there
# is an object at a path [list, i, "nested", j, "nested", k, ...] of deeper_lists.
# (Only when there are depth-2 statements: most statements have none.)
nested_deeper contains statement if {
	count(nested_2) > 0
	walk(deeper_lists, [path, statement])
	is_object(statement)
	nesting_path(path)
}

deeper_lists := [parent.nested | some parent in nested_2]

# [list, i], [list, i, "nested", j], ...: numbers at 0 and at odd steps, "nested" between.
nesting_path(path) if {
	count(path) % 2 == 0
	every index, step in path {
		nesting_step(index, step)
	}
}

nesting_step(0, step) if is_number(step)

nesting_step(index, step) if {
	index % 2 == 1
	is_number(step)
}

nesting_step(index, "nested") if {
	index > 0
	index % 2 == 0
}

# METADATA
# title: commands
# description: The commands of the statement and of every nested statement.
commands contains statement.command if some statement in statements

# METADATA
# title: classified_columns
# description: |
#   Classified columns of the session's database, by qualified name
#   ("public.customers.email"): the entry of data.data.classification (policies/data)
#   as it is there, {"class", "type"}.
#   A complete rule (one object, built once per query): as a partial rule, every lookup
#   of another name (classified_columns[ref.column]) evaluated the whole body again.
#   The entry is not copied with its relation and column added: no rule reads them, and
#   building one more object per classified column was a tenth of a decision's allocations.
classified_columns := {concat(".", [relation, column]): info | # regal ignore:prefer-set-or-object-rule
	some relation, columns in classification
	some column, info in columns
	is_object(info) # an entry that is not an object classifies nothing
}

# METADATA
# title: referenced_classification
# description: |
#   The entries of classified_columns for the columns in references only, by qualified
#   name: the name is looked up in classification at each of its dots (relation
#   "public.customers", column "email"), which finds the entry classified_columns[name]
#   holds. The rules that judge referenced columns read this instead of classified_columns,
#   which builds a name for every classified column of the database on every query (with
#   column_masks, 2,260 -> 2,100 allocations per decision on the bench input).
#   Each distinct name is looked up once (a name is referenced once per usage).
referenced_classification := {name: info | # regal ignore:prefer-set-or-object-rule
	some name in {ref.column | some ref in references}
	some i in indexof_n(name, ".")
	columns := classification[substring(name, 0, i)]
	info := columns[substring(name, i + 1, -1)]
	is_object(info)
}

# METADATA
# title: classified_references
# description: |
#   The references whose column has an entry in referenced_classification: the only ones
#   the rules about classified columns (masks, denied classes, oracles) need to look at,
#   and most statements have few or none.
classified_references := {ref | # regal ignore:prefer-set-or-object-rule
	some ref in references
	referenced_classification[ref.column]
}

# The classification of the session's database: relation -> column -> {"class", "type"}.
classification := data.data.classification.databases[input.session.database]

# METADATA
# title: classified_relations
# description: Relations ("public.customers") with at least one classified column.
classified_relations contains relation if {
	some relation, columns in classification
	count(columns) > 0
}

# METADATA
# title: relation_name
# description: The qualified name of a relation fact ("public.customers").
relation_name(relation) := sprintf("%s.%s", [relation.schema, relation.name])

# METADATA
# title: function_name
# description: A function's name without its schema ("pg_catalog.lo_export" -> "lo_export").
function_name(function) := parts[count(parts) - 1] if parts := split(function, ".")

# METADATA
# title: column_refs
# description: |
#   The columns a statement touches, as {"column", "usage"}: usage as in the columns
#   facts, "output" for a direct output and for every classified column of a relation
#   read whole (starred_reads), "derived" for an output computed from a column (an expression, a function).
column_refs(statement) := (from_columns | from_outputs) | from_star if {
	from_columns := {{"column": concat(".", [ref.relation, ref.column]), "usage": ref.usage} |
		some ref in statement.columns
	}
	from_outputs := {{"column": source, "usage": output_usage(output)} |
		some output in statement.outputs
		some source in output.sources
	}
	from_star := {{"column": concat(".", [relation, column]), "usage": "output"} |
		some relation in statement.star # starred_reads only for a statement with a star
		relation in starred_reads(statement)
		some column, _ in classification[relation]
	}
}

# METADATA
# title: starred_reads
# description: |
#   Relations whose every column a statement reads: SELECT * and COPY ... TO of a whole
#   table. (The analyzer also lists the table of COPY ... FROM in "star"; that is a write.)
starred_reads(statement) := {relation |
	some relation in statement.star
	some read in statement.relations
	read.access == "read"
	relation_name(read) == relation
}

output_usage(output) := "output" if {
	output.direct == true
} else := "derived"

# METADATA
# title: references
# description: |
#   The column references of the statement and of every nested statement. A statement
#   that nests nothing has its own references only: no union over statement_refs.
references := column_refs(input.statement) if {
	input.statement.nested == []
} else := {ref |
	some refs in statement_refs
	some ref in refs
}

# METADATA
# title: statement_refs
# description: |
#   column_refs of every statement in statements, by statement: a rule, so that each is
#   computed once per query however many rules read it.
statement_refs := {statement: refs | # regal ignore:prefer-set-or-object-rule
	some statement in statements
	refs := column_refs(statement)
}

# METADATA
# title: outcome
# description: |
#   What a topic rule contributes to the decision: an effect ("deny", "require_approval",
#   "mask", "row_limit"), a reason and the time the decision may be cached.
outcome(effect, reason) := {"effect": effect, "reason": reason, "cache_ttl_s": data.data.settings.cache_ttl_s}

# METADATA
# title: controlled
# description: |
#   The outcome of a rule governed by a profile control (data.pgwarden.identities.mode):
#   a deny or an approval requirement; undefined when the control's mode is "allow".
#   (The object is built here, not by a call of outcome.)
controlled(mode, reason) := {"effect": mode, "reason": reason, "cache_ttl_s": data.data.settings.cache_ttl_s} if {
	mode != "allow"
}
