# METADATA
# title: Privilege
# description: |
#   Statements that change who the session is or what roles may do: SET ROLE, SET
#   SESSION AUTHORIZATION (and their RESET), set_config or SET of role settings,
#   ALTER SYSTEM, GRANT/REVOKE and role management, SECURITY DEFINER functions,
#   administrative functions and writes to the system catalogs. Governed by the
#   "privilege" control of the identity's profiles.
package pgwarden.privilege

import data.pgwarden.facts
import data.pgwarden.identities

# METADATA
# title: outcomes
# description: What privilege rules contribute to the decision.
# scope: document
outcomes contains outcome if {
	some statement in facts.statements
	statement.set.kind in {"set_role", "set_session_authorization"}
	reason := sprintf("privilege: %s changes the session's role", [statement.command])
	outcome := facts.controlled(identities.mode.privilege, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	statement.set.kind in {"set", "reset", "set_config"}
	sensitive_setting(statement.set.name)
	name := json.marshal(statement.set.name)
	reason := sprintf("privilege: %s of %s changes a privileged setting", [statement.set.kind, name])
	outcome := facts.controlled(identities.mode.privilege, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	role_command(statement.command)
	reason := sprintf("privilege: %s changes privileges or server configuration", [statement.command])
	outcome := facts.controlled(identities.mode.privilege, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	routine_command(statement.command)
	regex.match(`(?i)\bsecurity\s+definer\b`, statement.sql_normalized)
	reason := sprintf("privilege: %s ... SECURITY DEFINER runs code with its owner's rights", [statement.command])
	outcome := facts.controlled(identities.mode.privilege, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	some function in statement.functions
	administrative_function(function)
	reason := sprintf("privilege: %s is an administrative function", [function])
	outcome := facts.controlled(identities.mode.privilege, reason)
}

outcomes contains outcome if {
	some statement in facts.statements
	some relation in statement.relations
	relation.schema in data.data.settings.catalog_schemas
	relation.access in {"write", "ddl"}
	reason := sprintf("privilege: %s writes to the system catalog %s", [statement.command, facts.relation_name(relation)])
	outcome := facts.controlled(identities.mode.privilege, reason)
}

# A setting that changes identity or bypasses checks. A set_config whose setting is
# not a constant (a parameter, a column) has no name (null, or ""): it could be any.
sensitive_setting(name) if {
	is_string(name)
	lower(name) in data.data.settings.privileged_settings
}

sensitive_setting(null)

sensitive_setting("")

# Commands that change privileges or server configuration (a function: see
# exfiltration.remote_command).
role_command(command) if command in {
	"ALTER SYSTEM", "GRANT", "REVOKE", "GRANT ROLE", "REVOKE ROLE", "ALTER DEFAULT PRIVILEGES",
	"CREATE ROLE", "ALTER ROLE", "DROP ROLE", "CREATE USER", "ALTER USER", "DROP USER",
	"CREATE GROUP", "ALTER GROUP", "DROP GROUP", "REASSIGN OWNED", "DROP OWNED",
	"CREATE EXTENSION", "ALTER EXTENSION", "CREATE EVENT TRIGGER", "CREATE LANGUAGE", "LOAD",
	"SECURITY LABEL",
}

routine_command(command) if command in {"CREATE FUNCTION", "CREATE PROCEDURE", "ALTER FUNCTION", "ALTER PROCEDURE"}

# (A function: see exfiltration.file_function.)
administrative_function(function) if facts.function_name(function) in data.data.functions.administrative
