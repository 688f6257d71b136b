# The entry point for new connections, data.pgwarden.session (input: identity and
# session). An identity that matches no profile is refused; the upstream role comes
# from the matched profile in policies/data/identities.json. The startup packet's
# user (session.requested_user) is only a hint: it selects one of the profile's
# "alternate_roles", and is otherwise ignored, so it never widens access.
# (The package METADATA is in decision.rego: OPA allows one per package.)
package pgwarden

import data.pgwarden.identities

# METADATA
# title: session
# description: |
#   {"allowed": bool, "upstream_role": string, "reasons": [string]} for a new session.
# entrypoint: true
# scope: document
default session := {
	"allowed": false,
	"upstream_role": "",
	"reasons": ["session: no profile admits this identity"],
}

session := {"allowed": true, "upstream_role": role, "reasons": [admission]} if {
	count(session_refusals) == 0
	some role in session_roles
	admission := sprintf("session: %q connects as %s (profile %s)", [
		identities.subject,
		role,
		concat(", ", sort(identities.matched)),
	])
}

session := {"allowed": false, "upstream_role": "", "reasons": sort(session_refusals)} if {
	count(session_refusals) > 0
}

requested_user := object.get(input, ["session", "requested_user"], "")

# The role each matched profile would use: the requested user when the profile lists
# it among its alternate roles, else the profile's upstream role.
session_roles contains role if {
	some name in identities.matched
	profile := identities.profiles[name]
	role := chosen_role(profile, requested_user)
}

chosen_role(profile, requested) := requested if {
	requested in object.get(profile, "alternate_roles", [])
} else := profile.upstream_role

session_refusals contains sprintf("session: %q matches no profile", [identities.subject]) if not identities.known

session_refusals contains reason if {
	some name in identities.matched
	not identities.database in identities.profiles[name].databases
	reason := sprintf("session: profile %s may not use database %q", [name, identities.database])
}

session_refusals contains reason if {
	count(session_roles) > 1
	roles := concat(", ", sort(session_roles))
	reason := sprintf("session: the matched profiles disagree on the upstream role (%s)", [roles])
}
