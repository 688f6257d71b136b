# METADATA
# title: Destructive statements
# description: |
#   Statements that destroy data or schema: DROP ..., TRUNCATE, and DELETE or UPDATE
#   without WHERE. Governed by the "destructive" control of the identity's profiles
#   (approval for the DBA, deny for agents in the reference data).
package pgwarden.destructive

import data.pgwarden.facts
import data.pgwarden.identities

# METADATA
# title: outcomes
# description: What destructive-statement rules contribute to the decision.
# scope: document
outcomes contains outcome if {
	some statement in facts.statements
	dropping(statement.command)
	reason := sprintf("destructive: %s destroys data or schema", [statement.command])
	outcome := facts.controlled(identities.mode.destructive, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	statement.command in {"DELETE", "UPDATE"}
	not statement.has_where
	targets := sort({facts.relation_name(relation) |
		some relation in statement.relations
		relation.access == "write"
	})
	reason := sprintf("destructive: %s without WHERE changes every row of %s", [statement.command, concat(", ", targets)])
	outcome := facts.controlled(identities.mode.destructive, reason)
}

dropping(command) if startswith(command, "DROP ")

# "TRUNCATE TABLE" (the analyzer's tag) or "TRUNCATE"
dropping(command) if startswith(command, "TRUNCATE")
