package console

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/stint-broker/stint/broker"
)

// Page sizes of the console's lists, and the most rows one export holds.
const (
	consolePageSize  = 50
	consoleMaxExport = 100000
)

// liveStates are the states in which a credential may exist.
var liveStates = []broker.LeaseState{broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking}

// livePage lists live leases.
type livePage struct {
	Leases  []*broker.Lease
	Total   int
	CanEdit bool
}

// handleConsoleLive handles "GET /console/leases": every live lease with the
// time left, revoke with a reason, and the kill switch of its agent.
func (con *Console) handleConsoleLive(c echo.Context) error {
	leases, total, err := con.Reader.FindLeases(c.Request().Context(), broker.LeaseFilter{States: liveStates, Limit: 500})
	if err != nil {
		return err
	}
	page := livePage{Leases: leases, Total: total, CanEdit: consoleUser(c).Role == broker.RoleAdmin}
	if c.QueryParam("partial") == "1" {
		return con.renderPartial(c, "live", "live-table", page)
	}
	return con.render(c, http.StatusOK, "live", "live", page)
}

// renderPartial renders one block of a page (htmx refreshes).
func (con *Console) renderPartial(c echo.Context, page, block string, content any) error {
	var b strings.Builder
	data := pageData{User: consoleUser(c), CSRF: csrfOf(c), Now: con.host.Now().UTC(), Content: content}
	if err := con.pages[page].ExecuteTemplate(&b, block, data); err != nil {
		return fmt.Errorf("render %s/%s: %w", page, block, err)
	}
	return c.HTML(http.StatusOK, b.String())
}

// historyQuery is the lease history's filter as the form holds it.
type historyQuery struct {
	Agent, Owner, Approver, Role, State, From, To string
	Page                                          int
}

// historyPage is the lease history.
type historyPage struct {
	Q       historyQuery
	Leases  []*broker.Lease
	Total   int
	Page    int
	Pages   int
	PrevURL string
	NextURL string
	CSVURL  string
	JSONURL string
	States  []broker.LeaseState
	NoMatch bool
	// Endings are, by lease id, the events that began the listed leases'
	// ends: who ended each one (the "Ended by" column).
	Endings map[string]*broker.LeaseEvent
}

// handleConsoleHistory handles "GET /console/history": every lease, newest
// first, filtered by agent, owner, approver, role, state and creation time,
// 50 a page;
// ?format=csv or json exports the whole filtered view.
func (con *Console) handleConsoleHistory(c echo.Context) error {
	q := historyQuery{
		Agent: strings.TrimSpace(c.QueryParam("agent")), Owner: strings.TrimSpace(c.QueryParam("owner")),
		Approver: strings.TrimSpace(c.QueryParam("approver")),
		Role:     strings.TrimSpace(c.QueryParam("role")), State: c.QueryParam("state"),
		From: c.QueryParam("from"), To: c.QueryParam("to"),
	}
	q.Page, _ = strconv.Atoi(c.QueryParam("page"))
	q.Page = max(q.Page, 1)
	filter, ok, err := con.historyFilter(c, q)
	if err != nil {
		return err
	}
	format := c.QueryParam("format")
	switch format {
	case "", "html":
	case "csv", "json":
		if !ok {
			return con.exportLeases(c, format, nil, nil)
		}
		filter.Limit, filter.NoTotal = consoleMaxExport, true
		leases, _, err := con.Reader.FindLeases(c.Request().Context(), filter)
		if err != nil {
			return err
		}
		endings, err := con.leaseEndings(c.Request().Context(), leases)
		if err != nil {
			return err
		}
		return con.exportLeases(c, format, leases, endings)
	default:
		return broker.FieldErrorf("format", "Export format must be csv or json.")
	}

	page := historyPage{Q: q, Page: q.Page, States: broker.LeaseStates, NoMatch: !ok}
	if ok {
		filter.Limit, filter.Offset = consolePageSize, (q.Page-1)*consolePageSize
		if page.Leases, page.Total, err = con.Reader.FindLeases(c.Request().Context(), filter); err != nil {
			return err
		}
		if page.Endings, err = con.leaseEndings(c.Request().Context(), page.Leases); err != nil {
			return err
		}
	}
	page.Pages = max((page.Total+consolePageSize-1)/consolePageSize, 1)
	link := func(extra url.Values) string {
		v := url.Values{}
		for k, val := range map[string]string{"agent": q.Agent, "owner": q.Owner, "approver": q.Approver, "role": q.Role, "state": q.State, "from": q.From, "to": q.To} {
			if val != "" {
				v.Set(k, val)
			}
		}
		for k, val := range extra {
			v[k] = val
		}
		return consoleBasePath + "/history?" + v.Encode()
	}
	if q.Page > 1 {
		page.PrevURL = link(url.Values{"page": {strconv.Itoa(q.Page - 1)}})
	}
	if q.Page < page.Pages {
		page.NextURL = link(url.Values{"page": {strconv.Itoa(q.Page + 1)}})
	}
	page.CSVURL = link(url.Values{"format": {"csv"}})
	page.JSONURL = link(url.Values{"format": {"json"}})
	return con.render(c, http.StatusOK, "history", "history", page)
}

// leaseEndings returns who ended each of leases that has begun to end.
func (con *Console) leaseEndings(ctx context.Context, leases []*broker.Lease) (map[string]*broker.LeaseEvent, error) {
	ids := make([]string, 0, len(leases))
	for _, l := range leases {
		if l.State == broker.LeaseRevoking || l.State.Terminal() {
			ids = append(ids, l.ID)
		}
	}
	endings, err := con.Reader.FindLeaseEndings(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("find who ended the leases: %w", err)
	}
	return endings, nil
}

// endedBy names who ended a lease from the event that began its end: its
// actor, or "policy" for a lease created ended (a denial).
func endedBy(e *broker.LeaseEvent) string {
	switch {
	case e == nil:
		return ""
	case e.From == "":
		return "policy"
	}
	return e.Actor
}

// historyFilter turns the form into a lease filter; ok is false when the
// agent named exists nowhere, so nothing can match.
func (con *Console) historyFilter(c echo.Context, q historyQuery) (broker.LeaseFilter, bool, error) {
	var f broker.LeaseFilter
	if q.State != "" {
		st, err := broker.ParseLeaseState(q.State)
		if err != nil {
			return f, false, err
		}
		f.States = []broker.LeaseState{st}
	}
	if q.Role != "" {
		f.Role = &q.Role
	}
	if q.Owner != "" {
		owner := strings.ToLower(q.Owner)
		f.Owner = &owner
	}
	if q.Approver != "" {
		approver := strings.ToLower(q.Approver)
		f.Approver = &approver
	}
	var err error
	if f.CreatedAfter, err = parseConsoleTime("from", q.From, false); err != nil {
		return f, false, err
	}
	if f.CreatedBefore, err = parseConsoleTime("to", q.To, true); err != nil {
		return f, false, err
	}
	if q.Agent != "" {
		ctx := c.Request().Context()
		a, err := con.Reader.FindAgentByName(ctx, q.Agent)
		if broker.ErrorCode(err) == broker.ENOTFOUND {
			if a, err = con.Reader.FindAgentByID(ctx, q.Agent); broker.ErrorCode(err) == broker.ENOTFOUND {
				return f, false, nil
			}
		}
		if err != nil {
			return f, false, err
		}
		f.AgentID = &a.ID
	}
	return f, true, nil
}

// parseConsoleTime reads a date or datetime-local field (UTC). A bare date
// as an upper bound means the end of that day.
func parseConsoleTime(field, v string, upper bool) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			t = t.UTC()
			return &t, nil
		}
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		if upper {
			t = t.Add(24 * time.Hour)
		}
		return &t, nil
	}
	return nil, broker.FieldErrorf(field, "Use a date (2025-06-02) or a date and time (2025-06-02T09:00), in UTC.")
}

// exportLeases writes leases as CSV or JSON for download, with who ended
// each one (endings, as leaseEndings returns them).
func (con *Console) exportLeases(c echo.Context, format string, leases []*broker.Lease, endings map[string]*broker.LeaseEvent) error {
	name := "stint-leases-" + con.host.Now().UTC().Format("20060102T150405Z")
	h := c.Response().Header()
	if format == "json" {
		h.Set(echo.HeaderContentDisposition, `attachment; filename="`+name+`.json"`)
		if leases == nil {
			leases = []*broker.Lease{}
		}
		by := make(map[string]string, len(endings))
		for id, e := range endings {
			by[id] = endedBy(e)
		}
		return c.JSON(http.StatusOK, map[string]any{"leases": leases, "total": len(leases), "ended_by": by})
	}
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+name+`.csv"`)
	h.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
	c.Response().WriteHeader(http.StatusOK)
	w := csv.NewWriter(c.Response())
	w.Write([]string{"id", "state", "end_state", "agent", "agent_id", "role", "task", "justification", "ttl",
		"decision", "policy_ids", "risk_score", "auth_method", "source_ip", "on_behalf_of",
		"created_at", "activated_at", "expires_at", "ended_at", "vault_lease_id", "username", "ended_by"})
	for _, l := range leases {
		var policies string
		if l.PolicyDecision != nil {
			policies = strings.Join(l.PolicyDecision.PolicyIDs, " ")
		}
		w.Write([]string{l.ID, string(l.State), string(l.EndState), broker.CSVCell(l.Agent), l.AgentID, broker.CSVCell(l.Role), broker.CSVCell(l.Task),
			broker.CSVCell(l.Justification), l.TTL.String(), broker.CSVCell(l.Decision), broker.CSVCell(policies), strconv.Itoa(l.RiskScore),
			broker.CSVCell(l.AuthMethod), broker.CSVCell(l.SourceIP), broker.CSVCell(l.OnBehalfOf), rfc3339(&l.CreatedAt), rfc3339(l.ActivatedAt),
			rfc3339(l.ExpiresAt), rfc3339(l.EndedAt), broker.CSVCell(l.VaultLeaseID), broker.CSVCell(l.Username), broker.CSVCell(endedBy(endings[l.ID]))})
	}
	w.Flush()
	return w.Error()
}

// leasePage is one lease with its timeline.
type leasePage struct {
	Lease     *broker.Lease
	Owner     string
	Timeline  []timelineStep
	Approvals []*broker.Approval
	Audit     []*broker.AuditEvent
	CanRevoke bool
	// Ending is the event that began the lease's end (who ended it), if
	// it has begun to end.
	Ending *broker.LeaseEvent
}

// timelineStep is one event of a lease with the phase it belongs to.
type timelineStep struct {
	Phase string
	Event *broker.LeaseEvent
}

// handleConsoleLease handles "GET /console/leases/:id": the lease, what
// policy decided and why, its approvals, and its timeline from request to
// end with who and why at each step, plus its audit records.
func (con *Console) handleConsoleLease(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	l, err := con.Reader.FindLeaseByID(ctx, id)
	if err != nil {
		return err
	}
	events, err := con.Reader.FindLeaseEvents(ctx, id)
	if err != nil {
		return err
	}
	page := leasePage{Lease: l, CanRevoke: consoleUser(c).Role == broker.RoleAdmin && l.State == broker.LeaseActive}
	if a, err := con.Reader.FindAgentByID(ctx, l.AgentID); err == nil {
		page.Owner = a.Owner
	}
	for _, e := range events {
		page.Timeline = append(page.Timeline, timelineStep{Phase: phaseOf(e), Event: e})
	}
	endings, err := con.leaseEndings(ctx, []*broker.Lease{l})
	if err != nil {
		return err
	}
	page.Ending = endings[l.ID]
	if page.Approvals, err = con.Reader.FindApprovals(ctx, id); err != nil {
		return err
	}
	if page.Audit, _, err = con.Reader.FindAuditEvents(ctx, broker.AuditFilter{Subject: &id, Limit: 200}); err != nil {
		return err
	}
	return con.render(c, http.StatusOK, "lease", "history", page)
}

// phaseOf names the step of the lease's life an event is.
func phaseOf(e *broker.LeaseEvent) string {
	switch {
	case e.From == "":
		return "requested"
	case e.From == e.To:
		return "note"
	case e.To == broker.LeaseApproved || e.To == broker.LeaseRejected:
		return "approval"
	case e.To == broker.LeaseIssuing, e.To == broker.LeaseDenied, e.To == broker.LeasePending:
		return "decision"
	case e.To == broker.LeaseActive:
		return "activated"
	case e.To == broker.LeaseRevoking:
		return "ending"
	case e.To.Terminal():
		return "ended"
	}
	return "change"
}

// handleConsoleLeaseRevoke handles "POST /console/leases/:id/revoke"
// (admin): reason required; the revocation goes through the lease service
// with the user as the actor.
func (con *Console) handleConsoleLeaseRevoke(c echo.Context) error {
	reason := strings.TrimSpace(c.FormValue("reason"))
	if err := checkFormText("reason", reason, true, broker.MaxReasonLen); err != nil {
		return err
	}
	ctx, cancel := withTimeout(c.Request().Context(), 45*time.Second)
	defer cancel()
	l, err := con.host.Leases.RevokeLease(ctx, c.Param("id"), reason)
	if err != nil {
		return err
	}
	done := "revoked"
	if l.State == broker.LeaseRevoking {
		done = "revoking"
	}
	return c.Redirect(http.StatusSeeOther, backTo(c, consoleBasePath+"/leases/"+url.PathEscape(l.ID))+"?done="+done)
}

// backTo returns the console page the form came from, if it says so.
func backTo(c echo.Context, def string) string {
	switch b := c.FormValue("back"); b {
	case "live":
		return consoleBasePath + "/leases"
	case "agents":
		return consoleBasePath + "/agents"
	}
	return def
}

// handleConsoleAgentRevokeAll handles "POST /console/agents/:id/revoke-all"
// (admin): the kill switch for one agent, with a reason. The containment is
// written at once; the page that follows shows its progress.
func (con *Console) handleConsoleAgentRevokeAll(c echo.Context) error {
	return con.consoleContain(c, "")
}

// handleConsoleAgentDisable handles "POST /console/agents/:id/disable"
// (admin): the agent can no longer authenticate, and its live leases are
// revoked.
func (con *Console) handleConsoleAgentDisable(c echo.Context) error {
	return con.consoleContain(c, broker.AgentDisabled)
}

// consoleContain contains the agent through the lease service, as the API
// does, and shows the containment's progress.
func (con *Console) consoleContain(c echo.Context, state broker.AgentState) error {
	reason := strings.TrimSpace(c.FormValue("reason"))
	if err := checkFormText("reason", reason, true, broker.MaxReasonLen); err != nil {
		return err
	}
	ctx := c.Request().Context()
	a, err := con.Reader.FindAgentByID(ctx, c.Param("id"))
	if err != nil {
		return err
	}
	cnt, err := con.host.Leases.ContainAgent(ctx, broker.ContainRequest{AgentID: a.ID, State: state, Reason: reason})
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, consoleBasePath+"/containments/"+cnt.ID)
}

// handleConsoleContainment handles "GET /console/containments/:id": a
// containment's progress, refreshed until every lease has ended.
func (con *Console) handleConsoleContainment(c echo.Context) error {
	cnt, err := con.host.Leases.WaitContainment(c.Request().Context(), c.Param("id"), 0)
	if err != nil {
		return err
	}
	return con.render(c, http.StatusOK, "containment", "agents", cnt)
}

// agentsPage lists agents.
type agentsPage struct {
	Rows    []agentRow
	Total   int
	Page    int
	PrevURL string
	NextURL string
	CanEdit bool
}

type agentRow struct {
	Agent       *broker.Agent
	Live, Total int
}

// handleConsoleAgents handles "GET /console/agents": owner, state, last
// seen and lease counts of every agent, with disable and the kill switch.
func (con *Console) handleConsoleAgents(c echo.Context) error {
	ctx := c.Request().Context()
	pageNo, _ := strconv.Atoi(c.QueryParam("page"))
	pageNo = max(pageNo, 1)
	agents, total, err := con.Reader.FindAgents(ctx, broker.AgentFilter{Limit: consolePageSize, Offset: (pageNo - 1) * consolePageSize})
	if err != nil {
		return err
	}
	page := agentsPage{Total: total, Page: pageNo, CanEdit: consoleUser(c).Role == broker.RoleAdmin}
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = a.ID
	}
	counts, err := con.Reader.CountAgentLeases(ctx, ids)
	if err != nil {
		return err
	}
	for _, a := range agents {
		c := counts[a.ID]
		page.Rows = append(page.Rows, agentRow{Agent: a, Live: c.Live, Total: c.Total})
	}
	if pageNo > 1 {
		page.PrevURL = fmt.Sprintf("%s/agents?page=%d", consoleBasePath, pageNo-1)
	}
	if pageNo*consolePageSize < total {
		page.NextURL = fmt.Sprintf("%s/agents?page=%d", consoleBasePath, pageNo+1)
	}
	return con.render(c, http.StatusOK, "agents", "agents", page)
}

// approvalsPage lists pending leases.
type approvalsPage struct {
	// Decidable is set when the approvals service is wired and the user may
	// decide here; Pending then comes from it, with digests.
	Decidable bool
	Pending   []*broker.PendingApproval
	// Why explains a read-only list.
	Why string
}

// handleConsoleApprovals handles "GET /console/approvals".
func (con *Console) handleConsoleApprovals(c echo.Context) error {
	ctx := c.Request().Context()
	u := consoleUser(c)
	page := approvalsPage{}
	switch {
	case con.host.Approvals == nil:
		page.Why = "Deciding in the console needs the approvals service, which this server does not run; the list is read-only."
	case u.Role == broker.RoleReviewer:
		page.Why = "Reviewers read; approvers and admins decide."
	case u.Email == "":
		page.Why = "Your account has no email address, which is how approvers are matched; ask an admin to set one."
	default:
		pending, err := con.host.Approvals.FindPendingApprovals(broker.NewContextWithActor(ctx, approverActor(c, u)))
		if err == nil {
			page.Decidable, page.Pending = true, pending
			return con.render(c, http.StatusOK, "approvals", "approvals", page)
		} else if code := broker.ErrorCode(err); code != broker.EFORBIDDEN && code != broker.ENOTFOUND {
			return err
		}
		page.Why = "You are not among the configured approvers; the list is read-only."
	}
	leases, _, err := con.Reader.FindLeases(ctx, broker.LeaseFilter{States: []broker.LeaseState{broker.LeasePending}, Limit: 500, NoTotal: true})
	if err != nil {
		return err
	}
	owners := map[string]string{} // agent id → owner ("" when not found)
	for _, l := range leases {
		pa := &broker.PendingApproval{Lease: l}
		owner, seen := owners[l.AgentID]
		if !seen {
			if a, err := con.Reader.FindAgentByID(ctx, l.AgentID); err == nil {
				owner = a.Owner
			}
			owners[l.AgentID] = owner
		}
		pa.Owner = owner
		if l.PolicyDecision != nil {
			pa.Needed = l.PolicyDecision.Approvals
		}
		page.Pending = append(page.Pending, pa)
	}
	return con.render(c, http.StatusOK, "approvals", "approvals", page)
}

// approverActor is the actor with which a console user decides: an approver
// named by email (admins too: approvals are made by people).
func approverActor(c echo.Context, u *broker.User) broker.Actor {
	return broker.Actor{Kind: broker.ActorApprover, Name: u.Email, AuthMethod: "console", SourceIP: c.RealIP()}
}

// handleConsoleApprove handles "POST /console/approvals/:id/approve".
func (con *Console) handleConsoleApprove(c echo.Context) error {
	return con.decide(c, true)
}

// handleConsoleDeny handles "POST /console/approvals/:id/deny".
func (con *Console) handleConsoleDeny(c echo.Context) error {
	return con.decide(c, false)
}

// decide records the user's answer through the approvals service, which
// refuses an approver's own agent's lease (EFORBIDDEN).
func (con *Console) decide(c echo.Context, approve bool) error {
	u := consoleUser(c)
	if con.host.Approvals == nil {
		return broker.Errorf(broker.ECONFLICT, "This server does not run the approvals service.")
	}
	if u.Email == "" {
		return broker.Errorf(broker.EFORBIDDEN, "Your account has no email address; approvers are matched by email.")
	}
	digest, reason := c.FormValue("digest"), strings.TrimSpace(c.FormValue("reason"))
	if strings.TrimSpace(digest) == "" {
		return broker.FieldErrorf("digest", "Field %q is required.", "digest")
	}
	if err := checkFormText("reason", reason, false, broker.MaxReasonLen); err != nil {
		return err
	}
	ctx := broker.NewContextWithActor(c.Request().Context(), approverActor(c, u))
	id := c.Param("id")
	var err error
	done := "approved"
	if approve {
		_, err = con.host.Approvals.Approve(ctx, id, digest)
	} else {
		done = "denied"
		_, err = con.host.Approvals.Deny(ctx, id, digest, reason)
	}
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, consoleBasePath+"/approvals?done="+done)
}

// auditPage shows the chain's status and its events.
type auditPage struct {
	Check   *broker.AuditVerification
	Head    *broker.AuditEvent
	Events  []*broker.AuditEvent
	Total   int
	Page    int
	PrevURL string
	NextURL string
	CSVURL  string
	JSONURL string
	Kind    string
	Actor   string
	Subject string
	From    string
	To      string
}

// handleConsoleAudit handles "GET /console/audit": the chain's last
// verification and head, and its events, newest first, filtered by kind
// (or prefix such as "lease."), actor, subject and time; ?format=csv or
// json exports the filtered events.
func (con *Console) handleConsoleAudit(c echo.Context) error {
	ctx := c.Request().Context()
	p := auditPage{Kind: c.QueryParam("kind"), Actor: c.QueryParam("actor"), Subject: c.QueryParam("subject"),
		From: c.QueryParam("from"), To: c.QueryParam("to")}
	p.Page, _ = strconv.Atoi(c.QueryParam("page"))
	p.Page = max(p.Page, 1)
	var f broker.AuditFilter
	if p.Kind != "" {
		f.Kind = &p.Kind
	}
	if p.Actor != "" {
		f.Actor = &p.Actor
	}
	if p.Subject != "" {
		f.Subject = &p.Subject
	}
	var err error
	if f.Since, err = parseConsoleTime("from", p.From, false); err != nil {
		return err
	}
	if f.Until, err = parseConsoleTime("to", p.To, true); err != nil {
		return err
	}
	switch format := c.QueryParam("format"); format {
	case "":
	case "csv", "json":
		return con.exportAudit(c, format, f)
	default:
		return broker.FieldErrorf("format", "Export format must be csv or json.")
	}

	f.Limit, f.Offset = consolePageSize, (p.Page-1)*consolePageSize
	if p.Events, p.Total, err = con.Reader.FindAuditEvents(ctx, f); err != nil {
		return err
	}
	if p.Head, err = con.Reader.AuditHead(ctx); err != nil {
		return err
	}
	con.verifyMu.Lock()
	p.Check = con.lastCheck
	con.verifyMu.Unlock()
	link := func(extra url.Values) string {
		v := url.Values{}
		for k, val := range map[string]string{"kind": p.Kind, "actor": p.Actor, "subject": p.Subject, "from": p.From, "to": p.To} {
			if val != "" {
				v.Set(k, val)
			}
		}
		for k, val := range extra {
			v[k] = val
		}
		return consoleBasePath + "/audit?" + v.Encode()
	}
	if p.Page > 1 {
		p.PrevURL = link(url.Values{"page": {strconv.Itoa(p.Page - 1)}})
	}
	if p.Page*consolePageSize < p.Total {
		p.NextURL = link(url.Values{"page": {strconv.Itoa(p.Page + 1)}})
	}
	p.CSVURL, p.JSONURL = link(url.Values{"format": {"csv"}}), link(url.Values{"format": {"json"}})
	return con.render(c, http.StatusOK, "audit", "audit", p)
}

// exportAudit streams the filtered events, oldest first, as CSV or JSON
// lines (the form "stint audit export" writes, which keeps the hashes
// verifiable).
func (con *Console) exportAudit(c echo.Context, format string, f broker.AuditFilter) error {
	name := "stint-audit-" + con.host.Now().UTC().Format("20060102T150405Z")
	h := c.Response().Header()
	if format == "json" {
		h.Set(echo.HeaderContentDisposition, `attachment; filename="`+name+`.jsonl"`)
		h.Set(echo.HeaderContentType, "application/x-ndjson")
	} else {
		h.Set(echo.HeaderContentDisposition, `attachment; filename="`+name+`.csv"`)
		h.Set(echo.HeaderContentType, "text/csv; charset=utf-8")
	}
	c.Response().WriteHeader(http.StatusOK)
	enc := broker.NewAuditEncoder(c.Response(), format)
	if err := enc.Header(); err != nil {
		return err
	}
	n := 0
	err := con.Reader.ScanAuditEvents(c.Request().Context(), f, func(e *broker.AuditEvent) error {
		if n++; n > consoleMaxExport {
			return errExportFull
		}
		return enc.Write(e)
	})
	if err != nil && err != errExportFull {
		return err
	}
	if err := enc.Flush(); err != nil {
		return err
	}
	details := map[string]any{"format": format, "events": min(n, consoleMaxExport), "via": "console"}
	if f.Kind != nil {
		details["kind"] = *f.Kind
	}
	if con.host.Audit == nil {
		return nil
	}
	return con.host.Audit.Record(c.Request().Context(), broker.AuditEvent{Kind: "audit.exported",
		Actor: "user:" + consoleUser(c).Name, Details: broker.AuditDetails(details)})
}

var errExportFull = broker.Errorf(broker.ETOOMANY, "The export is larger than 100,000 events; narrow it or use stint audit export.")

// handleConsoleAuditVerify handles "POST /console/audit/verify": walk the
// chain now and keep the result for the audit page.
func (con *Console) handleConsoleAuditVerify(c echo.Context) error {
	ctx, cancel := withTimeout(c.Request().Context(), 5*time.Minute)
	defer cancel()
	v, err := broker.VerifyAudit(ctx, con.Reader, broker.AuditVerifyOptions{
		Checkpoints: con.Checkpoints, CheckpointKey: con.CheckpointKey})
	if err != nil {
		return err
	}
	con.verifyMu.Lock()
	con.lastCheck = v
	con.verifyMu.Unlock()
	if !v.OK {
		con.host.Logger.ErrorContext(ctx, "audit chain broken", "seq", v.BrokenAt, "break", v.Break, "reason", v.Reason)
	}
	return c.Redirect(http.StatusSeeOther, consoleBasePath+"/audit?done=verified")
}

// checkFormText returns EINVALID naming field if value is blank and
// required, has more than max characters, or holds a control or
// bidirectional formatting character (broker.CheckText): the API's checks
// of the same fields, for forms.
func checkFormText(field, value string, required bool, max int) error {
	switch {
	case required && strings.TrimSpace(value) == "":
		return broker.FieldErrorf(field, "Field %q is required.", field)
	}
	return broker.CheckLen(field, value, max)
}

// setRetryAfter sets Retry-After to d in whole seconds, rounded up.
func setRetryAfter(h http.Header, d time.Duration) {
	if d > 0 {
		h.Set("Retry-After", strconv.Itoa(int((d+time.Second-1)/time.Second)))
	}
}

// rfc3339 renders t as RFC 3339 in UTC, as the API does, or "" if t is nil
// or zero.
func rfc3339(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// taskLive are the states of a task's leases that count as live: not yet
// ended, so revoking the task ends them.
var taskLive = []broker.LeaseState{broker.LeasePending, broker.LeaseApproved, broker.LeaseIssuing, broker.LeaseActive, broker.LeaseRevoking}

// tasksPage is the tasks page: without a task, the tasks that hold live
// leases; with one, every lease of that task.
type tasksPage struct {
	Task  string
	Tasks []*taskRow
	// Leases are the task's, newest first (at most consoleMaxTaskLeases of
	// Total); Live counts those not yet ended.
	Leases  []*broker.Lease
	Total   int
	Live    int
	Endings map[string]*broker.LeaseEvent
	CanEdit bool
}

// taskRow is one task of the list: its live leases' count, agents and
// roles, and when the newest was requested.
type taskRow struct {
	Name          string
	Live          int
	Agents, Roles []string
	Latest        time.Time
}

// consoleMaxTaskLeases bounds the leases the tasks page reads.
const consoleMaxTaskLeases = 500

// handleConsoleTasks handles "GET /console/tasks": the tasks that hold live
// leases, newest first; with ?task= every lease of that task, and for
// admins the form that revokes its live leases.
func (con *Console) handleConsoleTasks(c echo.Context) error {
	ctx := c.Request().Context()
	page := tasksPage{Task: c.QueryParam("task"), CanEdit: consoleUser(c).Role == broker.RoleAdmin}
	if page.Task == "" {
		live, _, err := con.Reader.FindLeases(ctx, broker.LeaseFilter{States: taskLive, Limit: consoleMaxTaskLeases, NoTotal: true})
		if err != nil {
			return err
		}
		byName := map[string]*taskRow{}
		for _, l := range live { // newest first
			r := byName[l.Task]
			if r == nil {
				r = &taskRow{Name: l.Task, Latest: l.CreatedAt}
				byName[l.Task] = r
				page.Tasks = append(page.Tasks, r)
			}
			r.Live++
			if !slices.Contains(r.Agents, l.Agent) {
				r.Agents = append(r.Agents, l.Agent)
			}
			if !slices.Contains(r.Roles, l.Role) {
				r.Roles = append(r.Roles, l.Role)
			}
		}
		for _, r := range page.Tasks {
			slices.Sort(r.Agents)
			slices.Sort(r.Roles)
		}
		return con.render(c, http.StatusOK, "tasks", "tasks", page)
	}
	if err := checkFormText("task", page.Task, true, maxTaskLen); err != nil {
		return err
	}
	var err error
	page.Leases, page.Total, err = con.Reader.FindLeases(ctx, broker.LeaseFilter{Task: &page.Task, Limit: consoleMaxTaskLeases})
	if err != nil {
		return err
	}
	for _, l := range page.Leases {
		if slices.Contains(taskLive, l.State) {
			page.Live++
		}
	}
	if page.Endings, err = con.leaseEndings(ctx, page.Leases); err != nil {
		return err
	}
	return con.render(c, http.StatusOK, "tasks", "tasks", page)
}

// maxTaskLen is the longest task a lease may name (as the API checks it).
const maxTaskLen = 500

// handleConsoleTaskRevoke handles "POST /console/tasks/revoke" (admin):
// every agent's live leases of the task end, active ones revoked and the
// others withdrawn, with the reason in each lease's history.
func (con *Console) handleConsoleTaskRevoke(c echo.Context) error {
	task := c.FormValue("task")
	reason := strings.TrimSpace(c.FormValue("reason"))
	if err := firstErr(checkFormText("task", task, true, maxTaskLen), checkFormText("reason", reason, true, broker.MaxReasonLen)); err != nil {
		return err
	}
	ctx, cancel := withTimeout(c.Request().Context(), 45*time.Second)
	defer cancel()
	ended, err := con.host.Leases.RevokeTask(ctx, task, reason)
	if err != nil {
		return err
	}
	done := "task"
	for _, l := range ended {
		if l.State == broker.LeaseRevoking || l.State == broker.LeaseIssuing {
			done = "taskqueue"
		}
	}
	return c.Redirect(http.StatusSeeOther, consoleBasePath+"/tasks?"+url.Values{"task": {task}, "done": {done}}.Encode())
}

// firstErr returns the first non-nil error.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
