# METADATA
# title: Opaque code
# description: |
#   Code whose effect the proxy cannot see: dynamic SQL that the analyzer could not
#   resolve ("unresolved"), commands it does not know ("unknown"), DO blocks (their RAISE and loops bypass masks and row
#   limits), creating functions, procedures, triggers and rules (their bodies run later,
#   unseen), and calls of user-defined functions. Governed by the "opaque_code",
#   "anonymous_code" and "user_functions" controls of the identity's profiles.
package pgwarden.opaque_code

import data.pgwarden.facts
import data.pgwarden.identities

# METADATA
# title: outcomes
# description: What opaque-code rules contribute to the decision.
# scope: document
outcomes contains outcome if {
	some statement in facts.statements
	statement.unresolved == true
	reason := sprintf("opaque code: dynamic SQL in %s could not be resolved", [statement.command])
	outcome := facts.controlled(identities.mode.opaque_code, reason)
}

outcomes contains outcome if {
	"unknown" in facts.commands
	reason := "opaque code: the analyzer does not know this command"
	outcome := facts.controlled(identities.mode.opaque_code, reason)
}

outcomes contains outcome if {
	"DO" in facts.commands
	reason := "opaque code: a DO block runs procedural code whose output bypasses masks and row limits"
	outcome := facts.controlled(identities.mode.anonymous_code, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	code_creating_command(statement.command)
	reason := sprintf("opaque code: %s stores code that later runs unseen by the proxy", [statement.command])
	outcome := facts.controlled(identities.mode.opaque_code, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	some function in statement.functions
	not trusted_function(function)
	reason := sprintf("opaque code: %s is a user-defined function whose body the proxy cannot see", [function])
	outcome := facts.controlled(identities.mode.user_functions, reason)
}

# Commands that store code (a function: see exfiltration.remote_command).
code_creating_command(command) if command in {
	"CREATE FUNCTION", "CREATE PROCEDURE", "CREATE TRIGGER", "CREATE RULE", "CREATE AGGREGATE",
	"CREATE OPERATOR", "CREATE CAST", "CREATE EVENT TRIGGER", "CREATE LANGUAGE",
	"ALTER FUNCTION", "ALTER PROCEDURE",
}

# A function in a trusted schema (pg_catalog, information_schema); an unqualified name
# is not trusted.
trusted_function(function) if {
	parts := split(function, ".")
	count(parts) == 2
	parts[0] in data.data.settings.trusted_function_schemas
}
