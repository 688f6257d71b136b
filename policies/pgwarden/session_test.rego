# METADATA
# title: Session tests
# description: Who may open a session, and as which upstream role.
package pgwarden.session_test

import data.pgwarden.fixtures_test as fx

session_for(identity, requested_user) := result if {
	session := object.union(fx.shop, {"requested_user": requested_user})
	result := data.pgwarden.session with input as {"identity": identity, "session": session}
}

test_allow_reference_identities_with_their_upstream_roles if {
	session_for(fx.reporting, "") == {
		"allowed": true, "upstream_role": "shop_reporting",
		"reasons": [`session: "agent:reporting" connects as shop_reporting (profile reporting)`],
	}
	session_for(fx.etl, "agent:etl").upstream_role == "shop_etl"
	session_for(fx.dba, "").upstream_role == "shop_dba"
}

test_allow_requested_user_selects_an_alternate_role if {
	session_for(fx.dba, "shop_owner").upstream_role == "shop_owner"
}

test_allow_requested_user_never_widens if {
	session_for(fx.reporting, "shop_dba") == session_for(fx.reporting, "")
	session_for(fx.reporting, "postgres").upstream_role == "shop_reporting"
}

test_deny_unknown_identity if {
	session_for(fx.stranger, "shop_dba") == {
		"allowed": false, "upstream_role": "",
		"reasons": [`session: "agent:nobody" matches no profile`],
	}
}

test_deny_input_without_identity if {
	result := data.pgwarden.session with input as {}
	result == {"allowed": false, "upstream_role": "", "reasons": [`session: "" matches no profile`]}
}

test_deny_database_outside_profile if {
	result := data.pgwarden.session with input as {"identity": fx.etl, "session": {"database": "crm"}}
	result == {"allowed": false, "upstream_role": "", "reasons": [`session: profile etl may not use database "crm"`]}
}

test_deny_profiles_that_disagree_on_the_role if {
	both := {"subject": "agent:sync", "groups": ["analytics", "etl"]}
	session_for(both, "") == {
		"allowed": false, "upstream_role": "",
		"reasons": ["session: the matched profiles disagree on the upstream role (shop_etl, shop_reporting)"],
	}
}

test_deny_profile_without_upstream_role if {
	probe := {"probe": {"match": {"subjects": ["agent:probe"]}, "databases": ["shop"]}}
	result := data.pgwarden.session with input as {"identity": {"subject": "agent:probe"}, "session": fx.shop}
		with data.data.identities.profiles as probe
	result == {"allowed": false, "upstream_role": "", "reasons": ["session: no profile admits this identity"]}
}
