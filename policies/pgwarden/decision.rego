# METADATA
# title: pgwarden
# description: |
#   The entry points: data.pgwarden.decision for statements (decision contract v1, this
#   file) and data.pgwarden.session for new connections (session.rego).
#   Every topic package contributes "outcomes"; this package combines them so that the
#   strictest wins: any deny denies; otherwise any approval requirement holds (until
#   context.approved says it was given); the smallest row limit applies; for a column the
#   strongest mask applies; cache_ttl_s is the smallest of the contributing rules; the
#   reasons of every contributing rule are kept. Fail closed: an identity that matches no
#   profile is denied by data.pgwarden.identities.
package pgwarden

import data.pgwarden.destructive
import data.pgwarden.exfiltration
import data.pgwarden.identities
import data.pgwarden.masking
import data.pgwarden.opaque_code
import data.pgwarden.privilege

# METADATA
# title: decision
# description: |
#   The decision for input (contract v1), always a complete object: action, reasons,
#   mask, row_limit, cache_ttl_s, dry_run, cache_scope. An input without a statement is
#   denied. cache_scope comes from data.data.settings: "identity" lets every session of
#   the identity reuse a cached decision, which holds only while no rule reads
#   input.session.id or input.session.client_addr (the connection's own facts; a test in
#   tests/gates checks the shipped rules); "session" when yours do.
# entrypoint: true
# scope: document
default decision := {
	"action": "deny",
	"reasons": ["decision: the input document has no statement"],
	"mask": {},
	"row_limit": null,
	"cache_ttl_s": 0,
	"dry_run": false,
}

decision := {
	"action": action,
	"reasons": reasons,
	"mask": mask,
	"row_limit": row_limit,
	"cache_ttl_s": cache_ttl_s,
	"dry_run": data.data.settings.dry_run == true,
	"cache_scope": object.get(data.data.settings, "cache_scope", "session"),
} if {
	is_object(input.statement)
}

# METADATA
# title: outcomes
# description: |
#   The outcomes of every topic rule for this input (one union of the topics' sets:
#   cheaper to evaluate than iterating over each topic's outcomes).
outcomes := union({
	identities.outcomes,
	exfiltration.outcomes,
	privilege.outcomes,
	opaque_code.outcomes,
	masking.outcomes,
	destructive.outcomes,
})

# The effects of the outcomes, collected in one pass: the action and cache_ttl_s only
# ask whether some outcome denies or requires approval.
effects contains outcome.effect if some outcome in outcomes

# (context.approved first: most inputs have no approval, and then the effects are not
# looked at here.)
approved if {
	input.context.approved == true
	not "deny" in effects
	"require_approval" in effects
}

# Allow unless an outcome says otherwise (an unknown identity always has a deny outcome).
default action := "allow"

action := "deny" if {
	"deny" in effects
} else := "allow" if {
	approved
} else := "require_approval" if {
	"require_approval" in effects
}

# Reasons: denials first, then approval requirements, then the approval note (when
# given), then the rest (masks, limits); each group sorted and without duplicates.
# One sort of [rank, reason] pairs orders every group at once (instead of one set and
# one sort per group).
reasons := [reason | some [_, reason] in sort(ranked_reasons)]

# (A partial set with the ranks in a literal object: no set union, no rule for the ranks.)
ranked_reasons contains [rank, outcome.reason] if {
	some outcome in outcomes
	rank := object.get({"deny": 0, "require_approval": 1}, object.get(outcome, "effect", null), 3)
}

ranked_reasons contains [2, "decision: the approval recorded in context.approved applies"] if approved

# For each column the strongest mask (data.data.masking.strength; an unknown function
# counts as strongest, and is denied by data.pgwarden.masking); ties by name. The
# [column, strength, mask] choices of the mask outcomes, sorted, put each column's
# strongest choice last among its own: one sort and one pass (a max over a comprehension
# per column before, which scanned every choice for every column).
mask[column] := function if {
	choices := sort({[outcome.column, strength, outcome.mask] |
		some outcome in outcomes
		outcome.effect == "mask"
		strength := object.get(data.data.masking.strength, outcome.mask, 1000)
	})
	some i, [column, _, function] in choices
	not choices[i + 1][0] == column
}

# The smallest row limit (min of no limits is undefined: then null).
default row_limit := null

row_limit := min({outcome.row_limit | some outcome in outcomes; outcome.effect == "row_limit"})

# A decision that read context.approved (volatile) must not be cached. (min of no TTLs
# is undefined: then the next else.)
cache_ttl_s := 0 if {
	"require_approval" in effects
} else := ttl if {
	ttl := min({outcome.cache_ttl_s | some outcome in outcomes})
} else := data.data.settings.cache_ttl_s
