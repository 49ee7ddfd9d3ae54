package mock

import (
	"context"
	"time"

	"github.com/stint-broker/stint/broker"
)

var _ broker.LeaseService = (*LeaseService)(nil)

// LeaseService is a mock of broker.LeaseService.
type LeaseService struct {
	RequestLeaseFn     func(ctx context.Context, req broker.LeaseRequest) (*broker.Lease, *broker.Credential, error)
	FindLeaseByIDFn    func(ctx context.Context, id string) (*broker.Lease, error)
	FindLeasesFn       func(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error)
	FindLeaseEventsFn  func(ctx context.Context, id string) ([]*broker.LeaseEvent, error)
	ReleaseLeaseFn     func(ctx context.Context, id string) (*broker.Lease, error)
	ReleaseTaskFn      func(ctx context.Context, task string) ([]*broker.Lease, error)
	RevokeTaskFn       func(ctx context.Context, task, reason string) ([]*broker.Lease, error)
	RevokeLeaseFn      func(ctx context.Context, id, reason string) (*broker.Lease, error)
	ContainAgentFn     func(ctx context.Context, req broker.ContainRequest) (*broker.Containment, error)
	WaitContainmentFn  func(ctx context.Context, id string, wait time.Duration) (*broker.Containment, error)
	FindContainmentsFn func(ctx context.Context, agentID string, limit int) ([]*broker.Containment, error)
	RolesFn            func(ctx context.Context) ([]*broker.Role, error)
	ReadyFn            func(ctx context.Context) error
	WaitLeaseFn        func(ctx context.Context, id string, wait time.Duration) (*broker.Lease, error)
	ActivateLeaseFn    func(ctx context.Context, id string) (*broker.Lease, *broker.Credential, error)
	CancelLeaseFn      func(ctx context.Context, id string) (*broker.Lease, error)
	ExtendLeaseFn      func(ctx context.Context, id, ttl string) (*broker.Lease, error)
	PreviewLeaseFn     func(ctx context.Context, req broker.LeaseRequest) (*broker.LeasePreview, error)
}

// PreviewLease implements broker.LeaseService by calling PreviewLeaseFn.
func (s *LeaseService) PreviewLease(ctx context.Context, req broker.LeaseRequest) (*broker.LeasePreview, error) {
	return s.PreviewLeaseFn(ctx, req)
}

// ExtendLease implements broker.LeaseService by calling ExtendLeaseFn.
func (s *LeaseService) ExtendLease(ctx context.Context, id, ttl string) (*broker.Lease, error) {
	return s.ExtendLeaseFn(ctx, id, ttl)
}

// WaitLease implements broker.LeaseService by calling WaitLeaseFn.
func (s *LeaseService) WaitLease(ctx context.Context, id string, wait time.Duration) (*broker.Lease, error) {
	return s.WaitLeaseFn(ctx, id, wait)
}

// ActivateLease implements broker.LeaseService by calling ActivateLeaseFn.
func (s *LeaseService) ActivateLease(ctx context.Context, id string) (*broker.Lease, *broker.Credential, error) {
	return s.ActivateLeaseFn(ctx, id)
}

// CancelLease implements broker.LeaseService by calling CancelLeaseFn.
func (s *LeaseService) CancelLease(ctx context.Context, id string) (*broker.Lease, error) {
	return s.CancelLeaseFn(ctx, id)
}

// RequestLease implements broker.LeaseService by calling RequestLeaseFn.
func (s *LeaseService) RequestLease(ctx context.Context, req broker.LeaseRequest) (*broker.Lease, *broker.Credential, error) {
	return s.RequestLeaseFn(ctx, req)
}

// FindLeaseByID implements broker.LeaseService by calling FindLeaseByIDFn.
func (s *LeaseService) FindLeaseByID(ctx context.Context, id string) (*broker.Lease, error) {
	return s.FindLeaseByIDFn(ctx, id)
}

// FindLeases implements broker.LeaseService by calling FindLeasesFn.
func (s *LeaseService) FindLeases(ctx context.Context, filter broker.LeaseFilter) ([]*broker.Lease, int, error) {
	return s.FindLeasesFn(ctx, filter)
}

// FindLeaseEvents implements broker.LeaseService by calling FindLeaseEventsFn.
func (s *LeaseService) FindLeaseEvents(ctx context.Context, id string) ([]*broker.LeaseEvent, error) {
	return s.FindLeaseEventsFn(ctx, id)
}

// ReleaseLease implements broker.LeaseService by calling ReleaseLeaseFn.
func (s *LeaseService) ReleaseLease(ctx context.Context, id string) (*broker.Lease, error) {
	return s.ReleaseLeaseFn(ctx, id)
}

// RevokeLease implements broker.LeaseService by calling RevokeLeaseFn.
func (s *LeaseService) RevokeLease(ctx context.Context, id, reason string) (*broker.Lease, error) {
	return s.RevokeLeaseFn(ctx, id, reason)
}

// ContainAgent implements broker.LeaseService by calling ContainAgentFn.
func (s *LeaseService) ContainAgent(ctx context.Context, req broker.ContainRequest) (*broker.Containment, error) {
	return s.ContainAgentFn(ctx, req)
}

// WaitContainment implements broker.LeaseService by calling WaitContainmentFn.
func (s *LeaseService) WaitContainment(ctx context.Context, id string, wait time.Duration) (*broker.Containment, error) {
	return s.WaitContainmentFn(ctx, id, wait)
}

// FindContainments implements broker.LeaseService by calling FindContainmentsFn.
func (s *LeaseService) FindContainments(ctx context.Context, agentID string, limit int) ([]*broker.Containment, error) {
	return s.FindContainmentsFn(ctx, agentID, limit)
}

// Roles implements broker.LeaseService by calling RolesFn.
func (s *LeaseService) Roles(ctx context.Context) ([]*broker.Role, error) {
	return s.RolesFn(ctx)
}

// Ready implements broker.LeaseService by calling ReadyFn.
func (s *LeaseService) Ready(ctx context.Context) error {
	return s.ReadyFn(ctx)
}

// ReleaseTask implements broker.LeaseService by calling ReleaseTaskFn.
func (s *LeaseService) ReleaseTask(ctx context.Context, task string) ([]*broker.Lease, error) {
	return s.ReleaseTaskFn(ctx, task)
}

// RevokeTask implements broker.LeaseService by calling RevokeTaskFn.
func (s *LeaseService) RevokeTask(ctx context.Context, task, reason string) ([]*broker.Lease, error) {
	return s.RevokeTaskFn(ctx, task, reason)
}
