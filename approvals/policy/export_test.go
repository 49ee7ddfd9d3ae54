package policy

import (
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/stint-broker/stint/broker"
)

// DecideUnindexed decides req evaluating every policy, as cedar-go does on
// its own: the baseline the scope index must agree with.
func (p *Engine) DecideUnindexed(req broker.DecisionRequest) broker.Decision {
	return p.decide(req, false)
}

// Candidates is how many policies the index selects for req.
func (p *Engine) Candidates(req broker.DecisionRequest) int {
	r, err := buildRequest(req, p.cfg.Location, p.Now(), nil)
	if err != nil {
		return -1
	}
	return len(p.set.Load().index.candidates(nil, r.req.Principal, r.req.Action, r.req.Resource))
}

// BuildRequest exposes the Cedar request and entities built for req.
func BuildRequest(req broker.DecisionRequest, loc *time.Location) (cedar.Request, cedar.EntityMap, error) {
	r, err := buildRequest(req, loc, time.Now(), nil)
	if err != nil {
		return cedar.Request{}, nil, err
	}
	return r.req, cedar.EntityMap{r.req.Principal: r.entities.principal, r.req.Resource: r.entities.resource}, nil
}

// NewTrustingSchema is NewFromDocuments without the check that
// the schema describes Stint's requests: it stands for a schema that has
// drifted from the code, the one way a validated policy could read an
// attribute a request lacks.
func NewTrustingSchema(docs []Document, schemaText []byte, cfg Config) (*Engine, error) {
	p := newEngine(cfg)
	p.trustSchema = true
	p.source = func() ([]Document, string, []byte, error) { return docs, "schema", schemaText, nil }
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}
