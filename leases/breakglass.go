package leases

import (
	"strings"
	"time"

	"github.com/stint-broker/stint/broker"
)

// requestWindow resolves a request's window. A break-glass request needs a
// reason and a role that allows break-glass; its window defaults to, and
// may not exceed, the role's breakglass.max_ttl. A privileged role's window
// may not exceed PrivilegedRules.MaxTTL.
//
// Break-glass (see govern) grants at once what policy would send to human
// approval; a policy forbid (context.breakglass is true) still denies, and
// separation of duty, role exclusions, strong authentication for
// privileged roles and the risk containment still apply. The lease is
// flagged (Lease.Breakglass), security is alerted and the owner must close
// a post-review (the GrantObserver).
func (s *Service) requestWindow(role *broker.Role, req broker.LeaseRequest) (time.Duration, error) {
	if !req.Breakglass {
		if strings.TrimSpace(req.BreakglassReason) != "" {
			return 0, broker.FieldErrorf("breakglass_reason", "A break-glass reason is given only with \"breakglass\": true.")
		}
		window, err := role.WindowFor(req.TTL)
		if err != nil {
			return 0, err
		}
		return window, s.checkPrivilegedWindow(role, window)
	}
	switch {
	case !role.Breakglass.Allowed:
		return 0, broker.FieldErrorf("breakglass", "Role %q does not allow break-glass requests.", role.Name)
	case strings.TrimSpace(req.BreakglassReason) == "":
		return 0, broker.FieldErrorf("breakglass_reason", "A break-glass request needs a reason: say what the emergency is.")
	}
	limit := role.Breakglass.MaxTTL
	if req.TTL == "" {
		return limit, s.checkPrivilegedWindow(role, limit)
	}
	window, err := role.WindowFor(req.TTL)
	if err != nil {
		return 0, err
	}
	if window > limit {
		return 0, broker.FieldErrorf("ttl", "A break-glass window on role %q is at most %s.", role.Name, limit)
	}
	return window, s.checkPrivilegedWindow(role, window)
}

// checkPrivilegedWindow refuses a privileged role's window over the cap.
// Configuration loading refuses such roles already; this holds for roles
// set by other means too.
func (s *Service) checkPrivilegedWindow(role *broker.Role, window time.Duration) error {
	if p := s.Privileged; p != nil && p.MaxTTL > 0 && role.Sensitivity.Privileged() && window > p.MaxTTL {
		return broker.FieldErrorf("ttl", "A window on %s role %q is at most %s (governance.privileged_max_ttl).", role.Sensitivity, role.Name, p.MaxTTL)
	}
	return nil
}
