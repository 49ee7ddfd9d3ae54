package client

import (
	"context"
	"net/http"
	"sort"
	"time"
)

// TaskLeases is the answer of ReleaseTask and RevokeTask: the task's leases
// that were live, in their new states.
type TaskLeases struct {
	Task   string   `json:"task"`
	Leases []*Lease `json:"leases"`
}

// Done reports whether every lease ended: none is still being revoked
// (the server's retry queue has it) or minted (call again).
func (t *TaskLeases) Done() bool {
	for _, l := range t.Leases {
		if l.State == StateRevoking || l.State == StateIssuing {
			return false
		}
	}
	return true
}

// ReleaseTask ends every live lease of task that the caller holds (an
// admin: of every agent): active ones are released, their credentials
// revoked in Vault; pending and approved ones canceled. Nothing live is no
// error: the answer lists no lease.
func (c *Client) ReleaseTask(ctx context.Context, task string) (*TaskLeases, error) {
	return c.taskCall(ctx, task, "/release", nil)
}

// RevokeTask revokes every agent's live leases of task, with a reason for
// each lease's history (admins).
func (c *Client) RevokeTask(ctx context.Context, task, reason string) (*TaskLeases, error) {
	return c.taskCall(ctx, task, "/revoke", map[string]string{"reason": reason})
}

func (c *Client) taskCall(ctx context.Context, task, suffix string, body any) (*TaskLeases, error) {
	var t TaskLeases
	if _, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/tasks/" + pathEscape(task) + suffix, body: body}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// TaskLeaseList returns every lease of task that the caller can see (an
// agent its own, an admin all), newest first, reading page after page.
func (c *Client) TaskLeaseList(ctx context.Context, task string) ([]*Lease, error) {
	return c.allLeases(ctx, LeaseFilter{Task: task}, 0)
}

// Task is a summary of one task's leases (Tasks).
type Task struct {
	Name string `json:"task"`
	// Live counts the leases not yet ended (pending, approved, issuing,
	// active, revoking); Leases all that were read.
	Live   int `json:"live"`
	Leases int `json:"leases"`
	// Agents and Roles are the distinct names among the leases, sorted.
	Agents []string `json:"agents"`
	Roles  []string `json:"roles"`
	// Latest is when the newest of its leases was requested.
	Latest time.Time `json:"latest"`
}

// TaskFilter selects the leases Tasks groups.
type TaskFilter struct {
	// States are lease states (any of them); empty means the live ones.
	States []string
	// Agent is an agent's name or id (admins; an agent sees its own only).
	Agent string
	// Max bounds the leases read (0: 5000); Tasks says whether it stopped
	// there.
	Max int
}

// LiveStates are the states of leases not yet ended.
var LiveStates = []string{StatePending, StateApproved, StateIssuing, StateActive, StateRevoking}

// Tasks groups the caller's visible leases (by default the live ones) by
// task, the task with the newest lease first. truncated is true when more
// than f.Max leases matched and only the newest f.Max were read.
func (c *Client) Tasks(ctx context.Context, f TaskFilter) (tasks []*Task, truncated bool, err error) {
	states := f.States
	if len(states) == 0 {
		states = LiveStates
	}
	limit := f.Max
	if limit <= 0 {
		limit = 5000
	}
	leases, err := c.allLeases(ctx, LeaseFilter{States: states, Agent: f.Agent}, limit+1)
	if err != nil {
		return nil, false, err
	}
	if len(leases) > limit {
		leases, truncated = leases[:limit], true
	}
	byName := map[string]*Task{}
	agents, roles := map[string]map[string]bool{}, map[string]map[string]bool{}
	for _, l := range leases {
		t := byName[l.Task]
		if t == nil {
			t = &Task{Name: l.Task}
			byName[l.Task] = t
			agents[l.Task], roles[l.Task] = map[string]bool{}, map[string]bool{}
			tasks = append(tasks, t)
		}
		t.Leases++
		if !l.Ended() || l.State == StateRevoking {
			t.Live++
		}
		if l.CreatedAt.After(t.Latest) {
			t.Latest = l.CreatedAt
		}
		if !agents[l.Task][l.Agent] {
			agents[l.Task][l.Agent] = true
			t.Agents = append(t.Agents, l.Agent)
		}
		if !roles[l.Task][l.Role] {
			roles[l.Task][l.Role] = true
			t.Roles = append(t.Roles, l.Role)
		}
	}
	for _, t := range tasks {
		sort.Strings(t.Agents)
		sort.Strings(t.Roles)
	}
	sort.SliceStable(tasks, func(i, j int) bool { return tasks[i].Latest.After(tasks[j].Latest) })
	return tasks, truncated, nil
}

// allLeases reads the pages of Leases for f, at most max leases (0: all).
func (c *Client) allLeases(ctx context.Context, f LeaseFilter, max int) ([]*Lease, error) {
	const page = 500 // the server's largest page
	var out []*Lease
	for {
		f.Limit, f.Offset = page, len(out)
		p, err := c.Leases(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Leases...)
		if len(p.Leases) < page || len(out) >= p.Total || (max > 0 && len(out) >= max) {
			return out, nil
		}
	}
}
