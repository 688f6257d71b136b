# METADATA
# title: Privilege tests
# description: Role changes, grants, server configuration and catalog writes.
package pgwarden.privilege_test

import data.pgwarden.fixtures_test as fx
import data.pgwarden.privilege

verdicts(identity, facts) := {outcome.reason: outcome.effect | some outcome in outcomes} if {
	outcomes := privilege.outcomes with input as fx.input_for(identity, facts)
}

set(kind, name) := {"command": "SET", "set": {"kind": kind, "name": name, "local": false}}

test_deny_set_role if {
	verdicts(fx.reporting, set("set_role", "role")) == {"privilege: SET changes the session's role": "deny"}
	verdicts(fx.dba, set("set_session_authorization", "session_authorization")) == {
		"privilege: SET changes the session's role": "require_approval",
	}
}

test_allow_ordinary_settings if {
	verdicts(fx.reporting, set("set", "statement_timeout")) == {}
	verdicts(fx.reporting, set("set_config", "application_name")) == {}
}

test_deny_role_settings_by_set_config_or_reset if {
	verdicts(fx.etl, set("set_config", "role")) == {`privilege: set_config of "role" changes a privileged setting`: "deny"}
	verdicts(fx.etl, set("reset", "ROLE")) == {`privilege: reset of "ROLE" changes a privileged setting`: "deny"}
	verdicts(fx.etl, set("set", "session_replication_role")) == {
		`privilege: set of "session_replication_role" changes a privileged setting`: "deny",
	}
}

test_deny_set_config_with_unknown_name if {
	verdicts(fx.reporting, set("set_config", "")) == {`privilege: set_config of "" changes a privileged setting`: "deny"}
	verdicts(fx.reporting, set("set_config", null)) == {
		"privilege: set_config of null changes a privileged setting": "deny",
	}
}

test_deny_privilege_commands if {
	verdicts(fx.reporting, {"command": "ALTER SYSTEM"}) == {
		"privilege: ALTER SYSTEM changes privileges or server configuration": "deny",
	}
	verdicts(fx.dba, {"command": "GRANT"}) == {
		"privilege: GRANT changes privileges or server configuration": "require_approval",
	}
	verdicts(fx.dba, {"command": "REVOKE"}) == {
		"privilege: REVOKE changes privileges or server configuration": "require_approval",
	}
}

test_allow_select if {
	verdicts(fx.reporting, {"command": "SELECT"}) == {}
}

test_deny_security_definer_function if {
	create := {
		"command": "CREATE FUNCTION",
		"sql_normalized": "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER AS $1",
	}
	verdicts(fx.dba, create) == {
		"privilege: CREATE FUNCTION ... SECURITY DEFINER runs code with its owner's rights": "require_approval",
	}
}

test_allow_security_invoker_function if {
	create := {"command": "CREATE FUNCTION", "sql_normalized": "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $1"}
	verdicts(fx.dba, create) == {}
}

test_deny_administrative_functions if {
	verdicts(fx.reporting, {"functions": ["pg_catalog.pg_terminate_backend"]}) == {
		"privilege: pg_catalog.pg_terminate_backend is an administrative function": "deny",
	}
}

test_allow_ordinary_functions if {
	verdicts(fx.reporting, {"functions": ["pg_catalog.count"]}) == {}
}

test_deny_catalog_writes if {
	update := {
		"command": "UPDATE", "has_where": true,
		"relations": [{"schema": "pg_catalog", "name": "pg_authid", "kind": "table", "access": "write"}],
	}
	verdicts(fx.dba, update) == {"privilege: UPDATE writes to the system catalog pg_catalog.pg_authid": "require_approval"}
}

test_allow_catalog_reads if {
	select := {"relations": [{"schema": "pg_catalog", "name": "pg_class", "kind": "table", "access": "read"}]}
	verdicts(fx.reporting, select) == {}
}

test_deny_set_role_nested_in_do_block if {
	block := {"command": "DO", "nested": [fx.statement(set("set_role", "role"))]}
	verdicts(fx.reporting, block) == {"privilege: SET changes the session's role": "deny"}
}
