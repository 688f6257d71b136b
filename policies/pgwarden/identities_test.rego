# METADATA
# title: Identity tests
# description: Profiles are matched by subject or group; unknown identities get nothing.
package pgwarden.identities_test

import data.pgwarden.fixtures_test as fx
import data.pgwarden.identities

verdicts(identity, facts) := {outcome.reason: outcome.effect | some outcome in outcomes} if {
	outcomes := identities.outcomes with input as fx.input_for(identity, facts)
}

matched(identity) := names if {
	names := identities.matched with input as fx.input_for(identity, {})
}

test_allow_match_by_subject if {
	matched({"subject": "agent:reporting", "groups": []}) == {"reporting"}
}

test_allow_match_by_group if {
	matched({"subject": "agent:nightly-report", "groups": ["analytics"]}) == {"reporting"}
}

test_deny_unknown_identity if {
	matched(fx.stranger) == set()
	verdicts(fx.stranger, {}) == {`identity: "agent:nobody" matches no profile`: "deny"}
}

test_deny_identity_without_subject_or_groups if {
	outcomes := identities.outcomes with input as {"statement": fx.statement({})}
	{outcome.reason | some outcome in outcomes} == {`identity: "" matches no profile`}
}

test_allow_known_identity_plain_select if {
	verdicts(fx.dba, {"relations": [fx.relation("orders", "read")]}) == {}
}

test_deny_other_database if {
	crm := object.union(fx.input_for(fx.dba, {}), {"session": {"database": "crm"}})
	outcomes := identities.outcomes with input as crm
	{outcome.reason | some outcome in outcomes} == {`identity: profile dba may not use database "crm"`}
}

test_deny_command_outside_profile_list if {
	verdicts(fx.reporting, {"command": "LISTEN"})["identity: profile reporting may not run LISTEN"] == "deny"
}

test_allow_command_in_profile_list if {
	verdicts(fx.etl, {"command": "SHOW"}) == {"identity: profile etl returns at most 10000 rows": "row_limit"}
}

test_deny_write_for_read_only_profile if {
	insert := {"command": "INSERT", "read_only": false, "relations": [fx.relation("orders", "write")]}
	verdicts(fx.reporting, insert) == {
		"identity: profile reporting may not run INSERT": "deny",
		"identity: profile reporting may not write to public.orders": "deny",
		"identity: profile reporting returns at most 1000 rows": "row_limit",
	}
}

test_deny_write_outside_listed_relations if {
	update := {"command": "UPDATE", "has_where": true, "relations": [fx.relation("customers", "write")]}
	verdicts(fx.etl, update)["identity: profile etl may not write to public.customers"] == "deny"
}

test_allow_write_to_listed_relation if {
	update := {"command": "UPDATE", "has_where": true, "relations": [fx.relation("orders", "write")]}
	verdicts(fx.etl, update) == {"identity: profile etl returns at most 10000 rows": "row_limit"}
	verdicts(fx.dba, update) == {}
}

test_deny_ddl_for_agents if {
	create := {"command": "CREATE TABLE", "read_only": false, "relations": [fx.relation("staging", "ddl")]}
	verdicts(fx.etl, create)["identity: CREATE TABLE changes the schema"] == "deny"
	verdicts(fx.dba, create) == {"identity: CREATE TABLE changes the schema": "require_approval"}
}

test_deny_maintenance_commands_and_ddl_relations if {
	verdicts(fx.dba, {"command": "VACUUM"}) == {"identity: VACUUM changes the schema": "require_approval"}
	verdicts(fx.dba, {"command": "LOCK TABLE"}) == {"identity: LOCK TABLE changes the schema": "require_approval"}
	alter := {"command": "ALTER TABLE", "relations": [fx.relation("orders", "ddl")]}
	verdicts(fx.dba, alter) == {"identity: ALTER TABLE changes the schema": "require_approval"}
}

test_deny_ddl_by_command_name_alone if {
	verdicts(fx.dba, {"command": "CREATE INDEX"}) == {"identity: CREATE INDEX changes the schema": "require_approval"}
}

test_allow_reads_are_not_ddl if {
	verdicts(fx.dba, {"command": "SELECT", "relations": [fx.relation("orders", "read")]}) == {}
}

test_deny_row_limit_for_reporting if {
	verdicts(fx.reporting, {}) == {"identity: profile reporting returns at most 1000 rows": "row_limit"}
}

test_allow_no_row_limit_for_dba if {
	verdicts(fx.dba, {}) == {}
}

test_deny_strictest_mode_of_several_profiles if {
	both := {"subject": "human:dba", "groups": ["dba", "analytics"]}
	modes := identities.mode with input as fx.input_for(both, {})
	modes.ddl == "deny"
	modes.anonymous_code == "deny"
}

test_allow_modes_of_one_profile if {
	modes := identities.mode with input as fx.input_for(fx.dba, {})
	modes.ddl == "require_approval"
	modes.user_functions == "allow"
}

# A profile that allows and one that requires approval: approval (the strictest).
test_allow_with_approval_when_profiles_allow_and_require_approval if {
	profiles := {
		"a": {"match": {"subjects": ["agent:x"]}, "controls": {"ddl": "allow", "export": "require_approval"}},
		"b": {"match": {"groups": ["g"]}, "controls": {"ddl": "require_approval", "export": "require_approval"}},
	}
	modes := identities.mode with input as fx.input_for({"subject": "agent:x", "groups": ["g"]}, {})
		with data.data.identities.profiles as profiles
	modes.ddl == "require_approval"
	modes.export == "require_approval"
	modes.privilege == "deny"
}

test_deny_modes_of_unknown_identity if {
	modes := identities.mode with input as fx.input_for(fx.stranger, {})
	modes.user_functions == "deny"
}

test_deny_missing_or_misspelt_control if {
	profiles := {"p": {"match": {"subjects": ["agent:x"]}, "controls": {"ddl": "alow"}}}
	modes := identities.mode with input as fx.input_for({"subject": "agent:x"}, {})
		with data.data.identities.profiles as profiles
	modes.ddl == "deny"
	modes.export == "deny"
}
