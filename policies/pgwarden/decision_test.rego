package pgwarden.decision_test

test_deny_unknown_identity if {
	data.pgwarden.decision.action == "deny" with input as {"identity": {"subject": "agent:nobody"}}
}
