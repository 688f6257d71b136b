# METADATA
# title: Identities
# description: |
#   Which profile of data.data.identities.profiles (policies/data/identities.json) an
#   identity gets, matched by subject or by group, and what the profile itself allows:
#   databases, commands, writes, DDL, row limit. An identity that matches no profile is
#   denied everything. An identity that matches several profiles gets the strictest of
#   them: every profile's restrictions apply.
package pgwarden.identities

import data.pgwarden.facts

# METADATA
# title: profiles
# description: The identity profiles, by name, from policies/data/identities.json.
profiles := data.data.identities.profiles

# METADATA
# title: matched
# description: Names of the profiles whose "match" selects the identity (by subject or by group).
# scope: document
matched contains name if {
	some name, profile in profiles
	input.identity.subject in profile.match.subjects
}

matched contains name if {
	some name, profile in profiles
	some group in input.identity.groups
	group in profile.match.groups
}

# METADATA
# title: known
# description: The identity matches at least one profile.
known if count(matched) > 0

# METADATA
# title: controls
# description: The controls a profile sets (policies/data/identities.json, "controls").
controls := {"ddl", "destructive", "export", "privilege", "opaque_code", "anonymous_code", "user_functions"}

# METADATA
# title: mode
# description: |
#   How the identity's profiles treat each control: "deny", "require_approval" or
#   "allow". The strictest profile wins; a missing or misspelt setting, and an unknown
#   identity, mean "deny".
mode[control] := strictest({object.get(profiles[name], ["controls", control], "deny") | some name in matched}) if {
	some control in controls
}

# "deny" unless every mode is "allow" or "require_approval" (no profile: no mode, "deny"),
# written as the three sets of modes that are not a deny: comparisons, not an iteration
# and a negation per mode.
strictest(modes) := "allow" if {
	modes == {"allow"}
} else := "require_approval" if {
	modes == {"require_approval"}
} else := "require_approval" if {
	modes == {"allow", "require_approval"}
} else := "deny"

subject := object.get(input, ["identity", "subject"], "")

database := object.get(input, ["session", "database"], "")

# METADATA
# title: outcomes
# description: What the identity's profiles contribute to the decision.
# scope: document
outcomes contains facts.outcome("deny", sprintf("identity: %q matches no profile", [subject])) if count(matched) == 0

outcomes contains facts.outcome("deny", reason) if {
	some name in matched
	not database in profiles[name].databases
	reason := sprintf("identity: profile %s may not use database %q", [name, database])
}

outcomes contains facts.outcome("deny", reason) if {
	some name in matched
	allowed := profiles[name].commands
	not "*" in allowed
	some statement in facts.statements
	command := object.get(statement, "command", "")
	not command in allowed
	reason := sprintf("identity: profile %s may not run %s", [name, command])
}

outcomes contains facts.outcome("deny", reason) if {
	some name in matched
	some statement in facts.statements
	some relation in statement.relations
	relation.access == "write"
	not writable(name, facts.relation_name(relation))
	reason := sprintf("identity: profile %s may not write to %s", [name, facts.relation_name(relation)])
}

outcomes contains outcome if {
	some statement in facts.statements
	ddl(statement)
	outcome := facts.controlled(mode.ddl, sprintf("identity: %s changes the schema", [statement.command]))
}

outcomes contains {
	"effect": "row_limit",
	"row_limit": limit,
	"reason": sprintf("identity: profile %s returns at most %d rows", [name, limit]),
	"cache_ttl_s": data.data.settings.cache_ttl_s,
} if {
	some name in matched
	limit := profiles[name].row_limit
	is_number(limit)
}

# By the profile's name, not the profile object: with the object as an argument, the
# write rule cost 1,463 -> 1,350 allocations per decision on an etl UPDATE of orders.
writable(name, _) if profiles[name].writes == "any"

writable(name, relation) if {
	profiles[name].writes == "listed"
	relation in profiles[name].writable_relations
}

# Schema changes and maintenance that are not CREATE/ALTER/DROP ... (command tags of
# the analyzer, proxy/analysis/commands.py; a function: see exfiltration.remote_command).
ddl_command(command) if command in {
	"COMMENT", "SECURITY LABEL", "REINDEX", "CLUSTER", "VACUUM", "ANALYZE", "CHECKPOINT",
	"REFRESH MATERIALIZED VIEW", "LOCK TABLE", "LOCK", "IMPORT FOREIGN SCHEMA", "REASSIGN OWNED",
	"SELECT INTO",
}

ddl(statement) if {
	some relation in statement.relations
	relation.access == "ddl"
}

ddl(statement) if ddl_command(statement.command)

# CREATE ..., ALTER ..., DROP ... in one regex.match (instead of one startswith per
# prefix of a rule set); a command that is not a string has no prefix.
ddl(statement) if regex.match(`^(CREATE|ALTER|DROP) `, statement.command)
