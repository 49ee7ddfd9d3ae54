package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// consoleFuncs are the templates' helpers. Every value still goes through
// html/template's contextual escaping: none of them returns template.HTML.
var consoleFuncs = template.FuncMap{
	"fmtTime": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05")
		case *time.Time:
			if v == nil || v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05")
		}
		return ""
	},
	"isoTime": func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	},
	// left renders the time until t, such as "4m 12s"; "due" once past.
	"left": func(now time.Time, t *time.Time) string {
		if t == nil {
			return ""
		}
		d := t.Sub(now).Round(time.Second)
		if d <= 0 {
			return "due"
		}
		return fmtDuration(d)
	},
	// ago renders the time since t, such as "3h ago"; "never" for nil.
	"ago": func(now time.Time, t *time.Time) string {
		if t == nil {
			return "never"
		}
		d := now.Sub(*t).Round(time.Second)
		if d < time.Second {
			return "just now"
		}
		return fmtDuration(d) + " ago"
	},
	"stateClass": func(s broker.LeaseState) string {
		switch {
		case s == broker.LeaseActive:
			return "st-active"
		case s == broker.LeaseRevoking || s == broker.LeaseIssuing:
			return "st-warn"
		case s == broker.LeasePending || s == broker.LeaseApproved:
			return "st-wait"
		case s == broker.LeaseDenied || s == broker.LeaseFailed || s == broker.LeaseRejected:
			return "st-bad"
		}
		return "st-ended"
	},
	"short": func(h string) string {
		if len(h) > 12 {
			return h[:12]
		}
		return h
	},
	"prettyJSON": func(raw json.RawMessage) string {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return string(raw)
		}
		return buf.String()
	},
	"join": strings.Join,
	"isRole": func(u *broker.User, roles ...string) bool {
		if u == nil {
			return false
		}
		for _, r := range roles {
			if string(u.Role) == r {
				return true
			}
		}
		return false
	},
	"ownedBy": func(u *broker.User, owner string) bool {
		return u != nil && u.Email != "" && strings.EqualFold(u.Email, owner)
	},
	"add": func(a, b int) int { return a + b },
	// endedBy names who ended a lease (pages.go).
	"endedBy": endedBy,
}

// fmtDuration renders d compactly: "2d 3h", "4h 5m", "6m 7s", "8s".
func fmtDuration(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s >= 86400:
		return fmt.Sprintf("%dd %dh", s/86400, s%86400/3600)
	case s >= 3600:
		return fmt.Sprintf("%dh %dm", s/3600, s%3600/60)
	case s >= 60:
		return fmt.Sprintf("%dm %ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}
