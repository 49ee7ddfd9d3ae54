package mock

import (
	"context"

	"github.com/stint-broker/stint/broker"
)

var _ broker.ApprovalService = (*ApprovalService)(nil)

// ApprovalService is a mock of broker.ApprovalService.
type ApprovalService struct {
	FindPendingApprovalsFn func(ctx context.Context) ([]*broker.PendingApproval, error)
	ApproveFn              func(ctx context.Context, leaseID, digest string) (*broker.Lease, error)
	DenyFn                 func(ctx context.Context, leaseID, digest, reason string) (*broker.Lease, error)
}

// FindPendingApprovals implements broker.ApprovalService by calling FindPendingApprovalsFn.
func (s *ApprovalService) FindPendingApprovals(ctx context.Context) ([]*broker.PendingApproval, error) {
	return s.FindPendingApprovalsFn(ctx)
}

// Approve implements broker.ApprovalService by calling ApproveFn.
func (s *ApprovalService) Approve(ctx context.Context, leaseID, digest string) (*broker.Lease, error) {
	return s.ApproveFn(ctx, leaseID, digest)
}

// Deny implements broker.ApprovalService by calling DenyFn.
func (s *ApprovalService) Deny(ctx context.Context, leaseID, digest, reason string) (*broker.Lease, error) {
	return s.DenyFn(ctx, leaseID, digest, reason)
}
