# METADATA
# title: pgwarden decision
# description: |
#   The single entry point, data.pgwarden.decision (decision contract v1).
#   Fail closed: a statement that no rule allows is denied.
package pgwarden

# METADATA
# title: decision
# description: The decision for input (contract v1); deny unless a rule allows.
# entrypoint: true
default decision := {
	"action": "deny",
	"reasons": ["no policy rule allows this statement"],
	"cache_ttl_s": 60,
}
