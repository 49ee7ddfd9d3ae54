package slack

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/slack-go/slack"

	"github.com/stint-broker/stint/approvals"
	"github.com/stint-broker/stint/broker"
)

// Action ids of the buttons and the deny modal.
const (
	actionApprove  = "stint_approve"
	actionDeny     = "stint_deny"
	blockDecision  = "stint_decision"
	callbackDeny   = "stint_deny_reason"
	blockReason    = "reason"
	actionReason   = "reason_input"
	maxFieldLength = 1800 // Slack caps a section field at 2000 characters
)

// buttonValue binds a click to the lease and the request digest shown.
func buttonValue(leaseID, digest string) string { return leaseID + ":" + digest }

// parseButtonValue splits a button value or modal metadata.
func parseButtonValue(v string) (leaseID, digest string, ok bool) {
	leaseID, digest, ok = strings.Cut(v, ":")
	return leaseID, digest, ok && leaseID != "" && digest != ""
}

// escape makes untrusted text inert in mrkdwn: no links, mentions or
// formatting injected through a task or justification, no control or
// bidirectional formatting characters (written as \x1b, \u202e …: a
// newline could fake a field, an override reverse what an approver reads),
// and at most maxFieldLength bytes, cut between characters.
func escape(s string) string {
	s = broker.EscapeControl(s)
	s = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "*", "\u2217", "_", "\uff3f", "~", "\u223c", "`", "'").Replace(s)
	if len(s) > maxFieldLength {
		cut := maxFieldLength
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func md(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.MarkdownType, s, false, false)
}
func pt(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
}

// summary is the notification text of the message.
func summary(r *approvals.Request) string {
	return broker.EscapeControl(fmt.Sprintf("Access request: agent %s wants %s for %s (%s)", r.Lease.Agent, r.Lease.Role, r.Lease.TTL, statusWord(r.Lease.State)))
}

func statusWord(s broker.LeaseState) string {
	switch s {
	case broker.LeasePending:
		return "pending approval"
	case broker.LeaseApproved:
		return "approved"
	case broker.LeaseRejected:
		return "denied"
	case broker.LeaseTimedOut:
		return "timed out"
	case broker.LeaseIssuing, broker.LeaseActive:
		return "active"
	case broker.LeaseRevoking:
		return "being revoked"
	}
	return string(s)
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "—"
	}
	// Slack renders <!date…> in each reader's time zone; the fallback is UTC.
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time}|%s>", t.Unix(), t.UTC().Format(time.RFC3339))
}

// requestBlocks renders the approvers' message for the lease as it is now:
// the request, what policy said, the answers so far, and the buttons while
// it is pending or a status line once it is not.
func requestBlocks(r *approvals.Request) []slack.Block {
	l := r.Lease
	sensitivity, description := "unknown (role removed)", ""
	if r.Role != nil {
		sensitivity, description = string(r.Role.Sensitivity), r.Role.Description
	}
	group := ""
	if l.PolicyDecision != nil {
		group = l.PolicyDecision.ApproverGroup
	}
	justification := l.Justification
	if strings.TrimSpace(justification) == "" {
		justification = "(none given)"
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(pt(fmt.Sprintf("Access request: %s → %s", l.Agent, l.Role))),
		slack.NewSectionBlock(nil, []*slack.TextBlockObject{
			md("*Agent:*\n" + escape(l.Agent)),
			md("*Owner:*\n" + escape(r.Agent.Owner)),
			md("*Role:*\n`" + escape(l.Role) + "`"),
			md("*Sensitivity:*\n" + escape(sensitivity)),
			md("*Window (TTL):*\n" + l.TTL.String()),
			md(fmt.Sprintf("*Risk score:*\n%d / 100", l.RiskScore)),
			md(fmt.Sprintf("*Approvals:*\n%d of %d from `%s`", r.Given, r.Needed, escape(group))),
			md("*Decide by:*\n" + fmtTime(l.DecideBy)),
		}, nil),
		slack.NewSectionBlock(md("*Task:*\n"+escape(l.Task)), nil, nil),
		slack.NewSectionBlock(md("*Justification:*\n"+escape(justification)), nil, nil),
	}
	if description != "" {
		blocks = append(blocks, slack.NewContextBlock("", md(escape(description))))
	}
	if d := l.PolicyDecision; d != nil && (len(d.Reasons) > 0 || len(d.PolicyIDs) > 0) {
		var b strings.Builder
		b.WriteString("*Policy:*")
		for _, reason := range d.Reasons {
			b.WriteString("\n• " + escape(reason))
		}
		if len(d.PolicyIDs) > 0 {
			b.WriteString("\n_policies: " + escape(strings.Join(d.PolicyIDs, ", ")) + "_")
		}
		blocks = append(blocks, slack.NewSectionBlock(md(b.String()), nil, nil))
	}
	if len(l.RiskFactors) > 0 {
		var b strings.Builder
		b.WriteString("*Risk factors:*")
		for _, f := range l.RiskFactors {
			fmt.Fprintf(&b, "\n• +%d %s: %s", f.Points, escape(f.Name), escape(f.Detail))
		}
		blocks = append(blocks, slack.NewSectionBlock(md(b.String()), nil, nil))
	}
	if len(r.Approvals) > 0 {
		var b strings.Builder
		for i, a := range r.Approvals {
			if i > 0 {
				b.WriteString("\n")
			}
			who := approverName(a)
			if a.Verdict == broker.VerdictApprove {
				fmt.Fprintf(&b, "✅ Approved by %s (%s) %s", escape(who), a.Via, fmtTime(&a.At))
			} else {
				fmt.Fprintf(&b, "⛔ Denied by %s (%s) %s", escape(who), a.Via, fmtTime(&a.At))
				if a.Reason != "" {
					b.WriteString(": " + escape(a.Reason))
				}
			}
		}
		blocks = append(blocks, slack.NewSectionBlock(md(b.String()), nil, nil))
	}
	blocks = append(blocks, slack.NewDividerBlock())
	if l.State == broker.LeasePending {
		value := buttonValue(l.ID, r.Digest)
		approve := slack.NewButtonBlockElement(actionApprove, value, pt("Approve")).
			WithStyle(slack.StylePrimary).
			WithConfirm(slack.NewConfirmationBlockObject(pt("Grant access?"),
				pt(fmt.Sprintf("%s gets %s for %s once it activates the lease.", l.Agent, l.Role, l.TTL)),
				pt("Approve"), pt("Cancel")))
		deny := slack.NewButtonBlockElement(actionDeny, value, pt("Deny")).WithStyle(slack.StyleDanger)
		blocks = append(blocks, slack.NewActionBlock(blockDecision, approve, deny))
		if len(r.Approvers) > 0 {
			blocks = append(blocks, slack.NewContextBlock("", md("May decide: "+escape(strings.Join(r.Approvers, ", "))+
				". The agent's owner may not.")))
		}
	} else {
		blocks = append(blocks, slack.NewSectionBlock(md(statusLine(r)), nil, nil))
	}
	blocks = append(blocks, slack.NewContextBlock("", md("lease `"+l.ID+"`")))
	return blocks
}

// approverName is how messages name who answered: the approver's name, or
// the email when the configuration gives none.
func approverName(a *broker.Approval) string {
	if a.ApproverName != "" {
		return a.ApproverName
	}
	return a.Approver
}

// statusLine says where a decided lease is now.
func statusLine(r *approvals.Request) string {
	l := r.Lease
	var by []string
	var denied *broker.Approval
	for _, a := range r.Approvals {
		if a.Verdict == broker.VerdictApprove {
			by = append(by, escape(approverName(a)))
		} else {
			denied = a
		}
	}
	approvedBy := strings.Join(by, ", ")
	switch l.State {
	case broker.LeaseApproved:
		return fmt.Sprintf("*Approved* by %s. Waiting for the agent to activate it by %s.", approvedBy, fmtTime(l.ActivateBy))
	case broker.LeaseRejected:
		if denied != nil {
			s := "*Denied* by " + escape(approverName(denied))
			if denied.Reason != "" {
				s += ": " + escape(denied.Reason)
			}
			return s
		}
		return "*Denied.*"
	case broker.LeaseTimedOut:
		return fmt.Sprintf("*Timed out:* no decision by %s.", fmtTime(l.DecideBy))
	case broker.LeaseLapsed:
		return fmt.Sprintf("*Lapsed:* approved by %s but not activated by %s.", approvedBy, fmtTime(l.ActivateBy))
	case broker.LeaseCanceled:
		return "*Canceled* by the agent."
	case broker.LeaseIssuing:
		return "*Activating:* the credential is being minted."
	case broker.LeaseActive:
		return fmt.Sprintf("*Active* since %s (approved by %s); the window closes %s.", fmtTime(l.ActivatedAt), approvedBy, fmtTime(l.ExpiresAt))
	case broker.LeaseRevoking:
		return fmt.Sprintf("*Ending (%s):* revocation is queued.", l.EndState)
	case broker.LeaseExpired:
		return fmt.Sprintf("*Expired* %s; the credential is revoked.", fmtTime(l.EndedAt))
	case broker.LeaseReleased:
		return fmt.Sprintf("*Released* by the agent %s; the credential is revoked.", fmtTime(l.EndedAt))
	case broker.LeaseRevoked:
		return fmt.Sprintf("*Revoked* by security %s; the credential is revoked.", fmtTime(l.EndedAt))
	case broker.LeaseFailed:
		return "*Failed:* minting the credential failed; nothing is live."
	}
	return "*" + string(l.State) + "*"
}

// ownerText is the direct message to the agent's owner about a change.
func ownerText(r *approvals.Request) string {
	l := r.Lease
	head := fmt.Sprintf("Your agent %s asked for %s for %s (task: %s).", l.Agent, l.Role, l.TTL, escape(l.Task))
	switch l.State {
	case broker.LeasePending:
		return head + fmt.Sprintf(" It needs %d approval(s); you cannot approve your own agent's requests.", r.Needed)
	}
	return fmt.Sprintf("Your agent %s's request for %s (lease %s) is now: %s", l.Agent, l.Role, l.ID, statusLine(r))
}

// denyModal asks for an optional reason before a denial.
func denyModal(leaseID, digest, about string) slack.ModalViewRequest {
	input := slack.NewPlainTextInputBlockElement(pt("Why? (optional, shown to the agent's owner)"), actionReason)
	// One line: reasons, like every free-text field, hold no newline
	// (broker.CheckText).
	input.Multiline = false
	input.MaxLength = 500
	reason := slack.NewInputBlock(blockReason, pt("Reason"), nil, input)
	reason.Optional = true
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		Title:           pt("Deny access"),
		Submit:          pt("Deny"),
		Close:           pt("Cancel"),
		CallbackID:      callbackDeny,
		PrivateMetadata: buttonValue(leaseID, digest),
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			slack.NewSectionBlock(md("Deny this request?\n"+escape(about)), nil, nil),
			reason,
		}},
	}
}
