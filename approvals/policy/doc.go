// Package policy decides lease requests with Cedar policies.
//
// # Central policy
//
// Engine implements broker.Decider with Cedar policies (cedar-go) loaded from
// the files the configuration names (policy.files). Every request is asked as
//
//	principal  Agent::"<agent name>"   id, name, owner, auth_method, on_behalf_of;
//	                                   the agent's labels are its tags
//	action     Action::"request" | Action::"extend"
//	resource   Role::"<role name>"     name, sensitivity, sensitivity_rank (1-4),
//	                                   kind, max_ttl_seconds, default_ttl_seconds,
//	                                   auto_approve; the role's eligibility
//	                                   selector is its tags
//	context    ttl_seconds, task, justification_given, source_ip (ipaddr, absent
//	           when unknown), hour and weekday (1 = Monday … 7 = Sunday) in
//	           policy.timezone, risk_score (0-100), active_roles, breakglass,
//	           eligible (the agent's labels satisfy the role's selector)
//
// policies/stint.cedarschema (DefaultSchema) is the schema. Labels are tags
// rather than a record because their keys are free-form: a record type would
// need every key in the schema, while principal.hasTag("team") &&
// principal.getTag("team") == "data" validates for any key.
//
// The decision:
//
//   - a request that any policy fails to evaluate is denied, naming the
//     policy and Cedar's error. cedar-go skips a policy whose evaluation
//     errors, which for a forbid would be fail-open; Stint does not skip: any
//     error, in a forbid or a permit, denies;
//   - a matching forbid denies;
//   - no matching permit denies;
//   - otherwise the request needs as many approvals as the largest
//     @approvals("N") among the matching permits (absent: 0, granted at once),
//     from the group named by @approvers("group") on the first of those
//     permits (in load order) that names one, else policy.default_approver_group.
//
// Decision.PolicyIDs are the policies that determined the outcome (the
// matching forbids and failing policies of a denial; the permits that set the
// number of approvals), named by their @id annotation or file:line:column.
// Decision.Reasons are sentences: a policy's @reason, or one Stint writes.
//
// # Validation
//
// Loading (at start, on SIGHUP, and in `stint policy validate`) validates
// every policy against the schema with cedar-go's validator
// (x/exp/schema/validate, strict mode): a policy that names an unknown entity
// type, action or attribute, compares values of different types, or reads an
// optional attribute (source_ip) without testing it with `has`, is refused
// with its file and position. The schema itself is checked against what
// Stint provides, so a custom schema cannot declare an attribute a request
// lacks; together these keep "missing attribute" errors out of decisions. The
// annotations are checked too: unknown ones are refused (a typo must not
// lower what a request needs), @approvals is a number from 0 to MaxApprovals
// on a permit, and a permit that needs approvals must name a group unless
// there is a default one. A failed reload keeps the policies in force.
//
// # Speed
//
// cedar-go evaluates every policy of the set it is given. Engine indexes the
// set by scope (principal, action and resource constraints) and evaluates
// only the policies whose scope can match the request plus the unscoped ones,
// which decides exactly as evaluating them all: a policy whose scope does not
// match is false without its conditions being looked at. See
// BenchmarkPolicyDecision.
//
// # Decision tables
//
// A decision table (Table, read by ReadTable) lists requests and the
// decision the policies should reach for each; Engine.RunTable decides
// every case and reports how each decision differs from what its case
// expects. `stint policy test` runs one; policies/examples.test.yaml is the
// table for the example policies.
package policy
