package main

import (
	"context"
	"errors"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases"
	"github.com/stint-broker/stint/web"
)

// instrumentedIssuer times every Vault call and counts its failures. It
// keeps Prometheus out of leases/vault.
type instrumentedIssuer struct {
	next    leases.Issuer
	metrics *web.Metrics
}

var _ leases.Issuer = (*instrumentedIssuer)(nil)

func (i *instrumentedIssuer) observe(op string, start time.Time, err error) {
	kind := ""
	switch {
	case err == nil:
	case errors.Is(err, leases.ErrUnavailable):
		kind = "unavailable"
	default:
		kind = "error"
	}
	i.metrics.ObserveVault(op, time.Since(start), kind)
}

// Issue implements leases.Issuer.
func (i *instrumentedIssuer) Issue(ctx context.Context, req leases.IssueRequest) (*leases.Grant, error) {
	start := time.Now()
	g, err := i.next.Issue(ctx, req)
	i.observe("issue", start, err)
	return g, err
}

// Revoke implements leases.Issuer.
func (i *instrumentedIssuer) Revoke(ctx context.Context, vaultLeaseID string) error {
	start := time.Now()
	err := i.next.Revoke(ctx, vaultLeaseID)
	i.observe("revoke", start, err)
	return err
}

// ListIssued implements leases.Issuer.
func (i *instrumentedIssuer) ListIssued(ctx context.Context, roles []*broker.Role) ([]leases.Issued, error) {
	start := time.Now()
	out, err := i.next.ListIssued(ctx, roles)
	i.observe("list", start, err)
	return out, err
}

// Ping implements leases.Issuer.
func (i *instrumentedIssuer) Ping(ctx context.Context) error {
	start := time.Now()
	err := i.next.Ping(ctx)
	i.observe("ping", start, err)
	return err
}

// Close closes the wrapped issuer if it has a Close method.
func (i *instrumentedIssuer) Close() error {
	if c, ok := i.next.(interface{ Close() error }); ok {
		return c.Close()
	}
	return nil
}

// instrumentedLeases times lease requests and counts policy decisions by
// outcome; every other method passes through.
type instrumentedLeases struct {
	broker.LeaseService
	metrics *web.Metrics
}

// RequestLease implements broker.LeaseService.
func (s *instrumentedLeases) RequestLease(ctx context.Context, req broker.LeaseRequest) (*broker.Lease, *broker.Credential, error) {
	start := time.Now()
	l, cred, err := s.LeaseService.RequestLease(ctx, req)
	outcome, decision := "error", broker.Outcome("")
	switch {
	case err == nil && cred != nil:
		outcome, decision = "granted", broker.OutcomeApprove
	case err == nil && l != nil && l.State == broker.LeasePending:
		outcome, decision = "pending", broker.OutcomeApprovals
	case broker.ErrorCode(err) == broker.EDENIED:
		outcome, decision = "denied", broker.OutcomeDeny
	case err == nil:
		outcome = "granted"
	}
	s.metrics.ObserveGrant(outcome, time.Since(start))
	if l != nil && l.PolicyDecision != nil {
		decision = l.PolicyDecision.Outcome
	}
	if decision != "" {
		s.metrics.ObserveDecision(decision)
	}
	return l, cred, err
}
