package identity

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/stint-broker/stint/broker"
)

var (
	_ broker.AgentService  = (*Service)(nil)
	_ broker.Authenticator = (*Service)(nil)
	_ broker.TokenService  = (*Service)(nil)
)

// AuthenticateRequest implements broker.Authenticator. A bearer secret
// decides when one is sent: an API key, an admin token, or (with OAuth
// enabled) a Stint access token, checked against the client certificate when
// it is bound to one. Without a bearer secret, the client certificate
// decides. Failures are counted per agent and source; an agent over its rate
// gets ETOOMANY.
func (s *Service) AuthenticateRequest(ctx context.Context, req broker.AuthRequest) (broker.Actor, error) {
	now := s.Now().UTC()
	var (
		actor broker.Actor
		blame string
		err   error
	)
	switch {
	case req.Resource != "" && (req.Bearer == "" || s.OAuth == nil || !looksLikeJWT(req.Bearer)):
		// A protected resource takes only access tokens issued for it.
		return broker.Actor{}, broker.Errorf(broker.EUNAUTHORIZED,
			"Send \"Authorization: Bearer <access token>\" with a Stint access token issued for %s (token endpoint parameter resource).", req.Resource)
	case req.Bearer != "" && s.OAuth != nil && looksLikeJWT(req.Bearer):
		actor, blame, err = s.verifyAccessToken(ctx, req.Bearer, req.PeerCertificates, req.Resource, now)
	case req.Bearer != "":
		actor, blame, err = s.authenticateSecret(ctx, req.Bearer, now)
	case len(req.PeerCertificates) > 0:
		actor, blame, err = s.authenticateCertActor(ctx, req.PeerCertificates, now)
	default:
		return broker.Actor{}, broker.Errorf(broker.EUNAUTHORIZED,
			"Authentication required: send \"Authorization: Bearer <key or access token>\" or a client certificate.")
	}
	if err != nil {
		if broker.ErrorCode(err) == broker.EUNAUTHORIZED {
			s.recordFailure(ctx, blame, req.SourceIP, now)
		}
		return broker.Actor{}, err
	}
	actor.SourceIP = req.SourceIP
	if actor.Kind == broker.ActorAgent {
		if err := s.Limits.Allow(ctx, actor.AgentID, actor.Name, now); err != nil {
			return broker.Actor{}, err
		}
	}
	return actor, nil
}

func (s *Service) authenticateCertActor(ctx context.Context, certs []*x509.Certificate, now time.Time) (broker.Actor, string, error) {
	a, blame, err := s.authenticateCert(ctx, certs, now)
	if err != nil {
		return broker.Actor{}, blame, err
	}
	if err := admit(a, broker.AuthMTLS); err != nil {
		return broker.Actor{}, a.ID, err
	}
	s.touch(ctx, a, now)
	return broker.Actor{Kind: broker.ActorAgent, Name: a.Name, AgentID: a.ID, AuthMethod: broker.AuthMTLS, Agent: a}, "", nil
}

// AuthFailures returns the failed authentications in the last hour blamed
// on the agent, and those from the source address; either key may be empty.
// It is a risk input.
func (s *Service) AuthFailures(ctx context.Context, agentID, sourceIP string) (byAgent, bySource int, err error) {
	now := s.Now().UTC()
	if agentID != "" {
		if byAgent, err = s.Failures.Agent(ctx, agentID, now); err != nil {
			return 0, 0, err
		}
	}
	if sourceIP != "" {
		if bySource, err = s.Failures.Source(ctx, sourceIP, now); err != nil {
			return 0, 0, err
		}
	}
	return byAgent, bySource, nil
}

// recordFailure counts a failed authentication. Failing to count it does
// not change the answer (the request fails anyway); it is logged.
func (s *Service) recordFailure(ctx context.Context, agentID, source string, now time.Time) {
	if err := s.Failures.Record(context.WithoutCancel(ctx), agentID, source, now); err != nil {
		s.Logger.Warn("failed authentication not counted", "agent_id", agentID, "source", source, "err", err)
	}
}
