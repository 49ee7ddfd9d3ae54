package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/stint-broker/stint/broker"
)

// PendingApproval is a pending lease that the calling approver may decide.
type PendingApproval struct {
	Lease *Lease `json:"lease"`
	// Owner is the requesting agent's owner, who may not approve.
	Owner string `json:"owner"`
	// Digest must be sent back with the answer: it proves the approver
	// saw this version of the request.
	Digest        string      `json:"digest"`
	ApproverGroup string      `json:"approver_group"`
	Needed        int         `json:"needed"`
	Given         int         `json:"given"`
	PolicyIDs     []string    `json:"policy_ids,omitempty"`
	Reasons       []string    `json:"reasons,omitempty"`
	DecideBy      *time.Time  `json:"decide_by,omitempty"`
	Approvals     []*Approval `json:"approvals"`
}

// Approval is one approver's answer.
type Approval struct {
	Approver string    `json:"approver"`
	Verdict  string    `json:"verdict"`
	Reason   string    `json:"reason,omitempty"`
	Via      string    `json:"via"`
	At       time.Time `json:"at"`
}

// Approvals lists the pending leases the calling approver may decide,
// oldest first. Without human approval on the server it is an *Error with
// CodeNotFound.
func (c *Client) Approvals(ctx context.Context) ([]*PendingApproval, error) {
	var out struct {
		Approvals []*PendingApproval `json:"approvals"`
	}
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/approvals"}, &out); err != nil {
		return nil, err
	}
	return out.Approvals, nil
}

// Approve approves a pending lease; digest comes from Approvals. Answering
// twice is not an error. The lease comes back approved once the quorum is
// met, still pending before.
func (c *Client) Approve(ctx context.Context, leaseID, digest string) (*Lease, error) {
	return c.leaseCall(ctx, http.MethodPost, leaseID, "/approve", map[string]string{"digest": digest})
}

// Deny rejects a pending lease; the reason is optional.
func (c *Client) Deny(ctx context.Context, leaseID, digest, reason string) (*Lease, error) {
	body := map[string]string{"digest": digest}
	if reason != "" {
		body["reason"] = reason
	}
	return c.leaseCall(ctx, http.MethodPost, leaseID, "/deny", body)
}

// Review is an access review or a break-glass post-review.
type Review = broker.Review

// ReviewFilter selects reviews. Zero fields select everything.
type ReviewFilter struct {
	// State is open or closed; Kind is access or breakglass.
	State, Kind string
	// AgentID is an agent's id.
	AgentID       string
	Limit, Offset int
}

// ReviewPage is one page of Reviews.
type ReviewPage struct {
	Reviews []*Review `json:"reviews"`
	Total   int       `json:"total"`
	Limit   int       `json:"limit"`
	Offset  int       `json:"offset"`
}

// Reviews lists reviews: an owner (approver token) sees those of its
// agents, an admin all.
func (c *Client) Reviews(ctx context.Context, f ReviewFilter) (*ReviewPage, error) {
	q := url.Values{}
	setIf(q, "state", f.State)
	setIf(q, "kind", f.Kind)
	setIf(q, "agent", f.AgentID)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.Offset > 0 {
		q.Set("offset", strconv.Itoa(f.Offset))
	}
	var p ReviewPage
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/reviews", query: q}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Review returns one review.
func (c *Client) Review(ctx context.Context, id string) (*Review, error) {
	return c.reviewCall(ctx, http.MethodGet, id, "", nil)
}

// Attest records a verdict ("keep" or "remove") on one role of an access
// review; the last verdict closes the review.
func (c *Client) Attest(ctx context.Context, reviewID, role, verdict, note string) (*Review, error) {
	return c.reviewCall(ctx, http.MethodPost, reviewID, "/attest", map[string]string{"role": role, "verdict": verdict, "note": note})
}

// CloseBreakglassReview closes a break-glass post-review with a note.
func (c *Client) CloseBreakglassReview(ctx context.Context, reviewID, note string) (*Review, error) {
	return c.reviewCall(ctx, http.MethodPost, reviewID, "/close", map[string]string{"note": note})
}

// RunReviews opens access reviews now (admins).
func (c *Client) RunReviews(ctx context.Context) ([]*Review, error) {
	var p ReviewPage
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/reviews/run"}, &p); err != nil {
		return nil, err
	}
	return p.Reviews, nil
}

func (c *Client) reviewCall(ctx context.Context, method, id, suffix string, body any) (*Review, error) {
	var r Review
	if _, err := c.do(ctx, request{method: method, path: "/v1/reviews/" + pathEscape(id) + suffix, body: body}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
