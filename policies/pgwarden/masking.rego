# METADATA
# title: Masking
# description: |
#   Classification (data.data.classification) x identity profiles: which classes an
#   identity may not touch at all ("denied_classes") and which mask function hides each
#   classified column it reads ("masks": class -> column type -> function, "*" for any
#   other type). Masks are applied by the proxy to direct outputs only, so an expression
#   over a masked column (which could undo a partial mask) is denied, and so are values
#   no mask can reach: a masked column returned by a statement that runs inside a
#   function (query_to_xml and the other SQL-text functions of data.data.functions) and
#   the planner statistics views, which hold sample values of every column.
package pgwarden.masking

import data.pgwarden.facts
import data.pgwarden.identities

# METADATA
# title: denied_classes
# description: Classes that one of the identity's profiles denies.
denied_classes contains class if {
	some name in identities.matched
	some class in identities.profiles[name].denied_classes
}

# METADATA
# title: column_masks
# description: |
#   [column, mask function] for every classified column that one of the identity's
#   profiles masks; a class entry without a function for the column's type and without
#   "*" gets "null", the strongest mask.
column_masks contains [column, function] if {
	some name in identities.matched
	some column, info in facts.classified_columns
	masks := identities.profiles[name].masks[info.class]
	function := object.get(masks, info.type, object.get(masks, "*", "null"))
}

# METADATA
# title: protected_column
# description: |
#   A column of facts.references that the identity may not read in clear: its class is
#   denied or masked. For the rules that judge referenced columns: column_masks goes
#   through every classified column of the database, this only through the referenced ones.
# scope: document
protected_column(column) if facts.referenced_classification[column].class in denied_classes

protected_column(column) if count(mask_functions(column)) > 0

# METADATA
# title: mask_functions
# description: |
#   The mask functions of a column of facts.references, as column_masks has them (an empty
#   set when it has none). Always defined, so OPA caches it per column within a query.
mask_functions(column) := {function |
	info := facts.referenced_classification[column]
	some name in identities.matched
	masks := identities.profiles[name].masks[info.class]
	function := object.get(masks, info.type, object.get(masks, "*", "null"))
}

# METADATA
# title: restricted
# description: |
#   One of the identity's profiles denies or masks some class: the identity may not see
#   every value in clear (everything but unrestricted profiles such as dba).
# scope: document
restricted if count(denied_classes) > 0

restricted if {
	some name in identities.matched
	count(identities.profiles[name].masks) > 0
}

# METADATA
# title: outcomes
# description: |
#   What classification contributes to the decision. Writing a value into a column of
#   a denied class reveals nothing; any other use of it (output, filter, join, order,
#   group, limit, from) is a read.
# scope: document
outcomes contains facts.outcome("deny", reason) if {
	some ref in facts.classified_references
	ref.usage != "write"
	class := facts.referenced_classification[ref.column].class
	class in denied_classes
	reason := sprintf("masking: %s is %s and may not be read by this identity", [ref.column, class])
}

outcomes contains {
	"effect": "mask",
	"column": ref.column,
	"mask": function,
	"reason": sprintf("masking: %s is returned masked with %s", [ref.column, function]),
	"cache_ttl_s": data.data.settings.cache_ttl_s,
} if {
	some ref in facts.classified_references
	ref.usage == "output"
	some function in mask_functions(ref.column)
}

outcomes contains facts.outcome("deny", reason) if {
	some ref in facts.classified_references
	ref.usage == "derived"
	count(mask_functions(ref.column)) > 0
	reason := sprintf("masking: an expression over %s would bypass its mask; select the column itself", [ref.column])
}

# A statement run by a SQL-text function (query_to_xml('SELECT email ...'), ts_stat,
# ts_rewrite(query, 'SELECT ...'), table_to_xml) is a nested statement of the statement
# that calls the function; its rows come back as the function's value (one XML document,
# a set of lexemes, a rewritten tsquery), which has no lineage for the proxy to mask.
# Ordinary subqueries and CTEs are not nested statements: their columns reach the outer
# outputs' sources and stay masked. Functions are rolled up from nested statements, so a
# statement nesting others (a DO body, EXECUTE) that calls such a function anywhere has
# every masked column of its nested statements refused: stricter than needed, never weaker.
outcomes contains facts.outcome("deny", reason) if {
	is_object(input.statement.nested[0]) # see below
	some statement in facts.statements
	some nested in statement.nested
	some function in statement.functions
	sql_text_function(function)
	some ref in facts.statement_refs[nested]
	ref.usage in {"output", "derived"}
	count(mask_functions(ref.column)) > 0
	reason := sprintf(
		"masking: %s is read by a statement that %s runs; the mask cannot follow into the function's output",
		[ref.column, function],
	)
}

# pg_stats and the other planner statistics views (data.data.settings.statistics_relations,
# names by schema) return most_common_vals and histogram_bounds: real values of every
# analyzed column, classified ones included, as arrays no mask covers. Relations are
# rolled up from nested statements too: the top level is enough.
outcomes contains facts.outcome("deny", reason) if {
	some relation in input.statement.relations
	relation.name in data.data.settings.statistics_relations[relation.schema]
	restricted
	name := facts.relation_name(relation)
	reason := sprintf(
		"masking: %s holds sample values of classified columns (planner statistics) that no mask covers",
		[name],
	)
}

# One output column fed by a masked column and by others (a UNION of email with a column
# the identity can write, through any depth of subqueries): the proxy masks the whole
# output column, so a value planted in the other column comes back under the same mask —
# with hash, the same digest as the masked value it guesses. Returned apart, each keeps
# its own mask. (Computed outputs over a masked column are denied above.)
outcomes contains facts.outcome("deny", reason) if {
	some statement in facts.statements
	some output in statement.outputs
	count(output.sources) > 1
	some column in output.sources
	count(mask_functions(column)) > 0
	others := concat(", ", sort([other | some other in output.sources; other != column]))
	reason := sprintf("masking: %s is returned in one column with %s (a set operation): %s", [
		column, others,
		"its mask would apply to them too; return them apart",
	])
}

# A relation the proxy's schema catalog does not know: created after the proxy read the
# schema (a migration's view over customers) or not there at all. Its columns have no
# lineage to a classified column and no mask can follow them, so an identity with masked
# or denied classes may not read it; the proxy reads the catalog again when it refuses
# such a statement, and a retry then sees the relation with its lineage.
outcomes contains facts.outcome("deny", reason) if {
	some relation in input.statement.relations
	relation.kind == "unknown"
	relation.access == "read"
	restricted
	reason := sprintf("masking: %s is not in the proxy's schema catalog (%s), so its columns cannot be masked; %s", [
		facts.relation_name(relation),
		"created since it was read?",
		"retry in a few seconds",
	])
}

# Cost (opa bench on the reference agent:reporting read, which nests nothing and calls
# no function): a first expression that indexes input ("nested[0]") is undefined for it
# and costs nothing; "nested != []", "count(nested) > 0" or iterating facts.statements
# first cost 10-30 allocations per decision each. Keep is_object: with a bare
# "input.statement.nested[0]" (which OPA 1.22 indexes like "== true") the rule never
# fired for a real nested statement (measured). The relation names are keyed by schema
# so that public.customers fails at one lookup (+8 allocations, against +35 for building
# every relation's qualified name).

outcomes contains facts.outcome("deny", reason) if {
	unknown_mask_function
	some [column, function] in column_masks
	not data.data.masking.strength[function]
	reason := sprintf("masking: unknown mask function %q for %s in policies/data", [function, column])
}

# A matched profile names a mask function that data.data.masking.strength does not know,
# or "null" (the mask of a type without a function) is unknown: only then can a column
# get an unknown mask, so the rule above goes through column_masks (every classified
# column) only then.
unknown_mask_function if {
	some name in identities.matched
	some masks in identities.profiles[name].masks
	some function in masks
	not data.data.masking.strength[function]
}

unknown_mask_function if not data.data.masking.strength["null"]

# The SQL-text functions (a function: see exfiltration.file_function).
sql_text_function(function) if facts.function_name(function) in data.data.functions.sql_text
