package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stint-broker/stint/approvals/governance"
	"github.com/stint-broker/stint/broker"
)

// GovernanceConfig sets the safeguards on privileged (high and critical)
// roles. They always apply: such a role is never granted without at least
// two distinct approvers (break-glass aside), needs an agent authenticated
// by mtls or private_key_jwt, and its owner hears of every grant.
type GovernanceConfig struct {
	// PrivilegedMaxTTL caps the window of high and critical roles (default
	// 1h). Loading refuses such a role whose max_ttl, max_total_ttl or
	// breakglass.max_ttl is longer, rather than silently shortening it.
	PrivilegedMaxTTL time.Duration `yaml:"privileged_max_ttl"`
	// PrivilegedApproverGroup approves a privileged request that policy
	// would have granted at once (default "security").
	PrivilegedApproverGroup string `yaml:"privileged_approver_group"`
}

// RiskConfig sets the live risk score (0-100) computed for every request:
// policy sees it as context.risk_score, leases store it with its parts.
type RiskConfig struct {
	// Disabled turns risk scoring off (every score is 0).
	Disabled bool `yaml:"disabled"`
	// RevokeThreshold: a score at or above it revokes the agent's live
	// leases and suspends the agent, with an alert (default 90; 0 never
	// contains).
	RevokeThreshold int `yaml:"revoke_threshold"`
	// MonitorInterval is how often agents with live leases are re-scored
	// between requests (failed authentications, denials; default 1m).
	MonitorInterval time.Duration `yaml:"monitor_interval"`
}

// ReviewsConfig sets periodic access reviews and break-glass post-reviews.
type ReviewsConfig struct {
	// Schedule is the cron spec (seconds optional, UTC) of review runs;
	// default quarterly, "0 0 9 1 1,4,7,10 *". Empty disables scheduled
	// runs (`stint reviews run` still works).
	Schedule string `yaml:"schedule"`
	// EnforceSchedule is the cron spec of the deadline check that suspends
	// and disables agents of overdue reviews (default "@every 1h").
	EnforceSchedule string `yaml:"enforce_schedule"`
	// Deadline is how long an owner has to attest (default 336h, 14 days);
	// then the agent is suspended.
	Deadline time.Duration `yaml:"deadline"`
	// Grace is how long after that the agent is disabled (default 336h).
	Grace time.Duration `yaml:"grace"`
	// InactiveDays flags agents with no lease request in that many days
	// for deprovisioning (default 90).
	InactiveDays int `yaml:"inactive_days"`
	// BreakglassDue is how long an owner has to close a break-glass
	// post-review before security is told (default 72h).
	BreakglassDue time.Duration `yaml:"breakglass_due"`
}

// SoDConfig lists separation-of-duty conflict sets: roles no agent may hold
// live leases on at the same time, checked in the store transaction that
// makes a lease live.
type SoDConfig struct {
	// Conflicts are strict sets, such as [[finance-report, txn-approve]]:
	// loading also refuses roles of a set whose eligible selectors could
	// match one agent (see governance.CheckConflictSets).
	Conflicts broker.ConflictSets `yaml:"conflicts"`
	// DynamicConflicts are sets whose roles one agent may be eligible for,
	// but never hold at once.
	DynamicConflicts broker.ConflictSets `yaml:"dynamic_conflicts"`
}

func defaultGovernanceConfig() GovernanceConfig {
	return GovernanceConfig{PrivilegedMaxTTL: time.Hour, PrivilegedApproverGroup: "security"}
}

func defaultRiskConfig() RiskConfig {
	return RiskConfig{RevokeThreshold: 90, MonitorInterval: time.Minute}
}

func defaultReviewsConfig() ReviewsConfig {
	return ReviewsConfig{
		Schedule: "0 0 9 1 1,4,7,10 *", EnforceSchedule: "@every 1h",
		Deadline: 14 * 24 * time.Hour, Grace: 14 * 24 * time.Hour, InactiveDays: 90, BreakglassDue: 72 * time.Hour,
	}
}

// cronParser parses the cron specs of the configuration (jobs.go uses the
// same options).
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// validateGovernance checks the governance, risk, reviews and sod sections
// against the roles.
func (c *Config) validateGovernance() error {
	g, r, rv := c.Governance, c.Risk, c.Reviews
	switch {
	case g.PrivilegedMaxTTL <= 0:
		return errors.New("governance.privileged_max_ttl must be positive")
	case g.PrivilegedApproverGroup == "":
		return errors.New("governance.privileged_approver_group is required")
	case r.RevokeThreshold < 0 || r.RevokeThreshold > 100:
		return errors.New("risk.revoke_threshold must be from 0 (never) to 100")
	case r.MonitorInterval <= 0:
		return errors.New("risk.monitor_interval must be positive")
	case rv.Deadline <= 0 || rv.Grace <= 0 || rv.BreakglassDue <= 0:
		return errors.New("reviews.deadline, reviews.grace and reviews.breakglass_due must be positive")
	case rv.InactiveDays < 0:
		return errors.New("reviews.inactive_days must not be negative")
	}
	if rv.Schedule != "" {
		if _, err := cronParser.Parse(rv.Schedule); err != nil {
			return fmt.Errorf("reviews.schedule %q: %w", rv.Schedule, err)
		}
	}
	if _, err := cronParser.Parse(rv.EnforceSchedule); err != nil {
		return fmt.Errorf("reviews.enforce_schedule %q: %w", rv.EnforceSchedule, err)
	}
	for _, role := range c.Roles {
		if role == nil || !role.Sensitivity.Privileged() {
			continue
		}
		if role.MaxTTL > g.PrivilegedMaxTTL || role.MaxTotalTTL > g.PrivilegedMaxTTL {
			return fmt.Errorf("role %q: %s roles may last at most governance.privileged_max_ttl (%s); lower max_ttl and max_total_ttl",
				role.Name, role.Sensitivity, g.PrivilegedMaxTTL)
		}
	}
	if err := governance.CheckConflictSets(c.Roles, c.SoD.Conflicts, c.SoD.DynamicConflicts); err != nil {
		return err
	}
	return nil
}
