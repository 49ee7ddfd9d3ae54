package policy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go"

	"github.com/stint-broker/stint/broker"
)

// Config says where a Policy's Cedar files are and how to read them.
type Config struct {
	// Files are the Cedar policy files, evaluated as one set. Reload reads
	// them again.
	Files []string
	// Schema is the Cedar schema file policies are validated against; empty
	// means the embedded DefaultSchema.
	Schema string
	// Location is the time zone of context.hour and context.weekday; nil
	// means UTC.
	Location *time.Location
	// DefaultApproverGroup is the group of a permit with @approvals but no
	// @approvers.
	DefaultApproverGroup string
	// FS, if set, is the file system Files and Schema are read from (such as
	// ExamplePolicies); nil reads the operating system's.
	FS fs.FS
}

// Policy decides lease requests with Cedar policies. It implements
// broker.Decider. Decisions read an immutable, validated and indexed policy
// set; Reload replaces it atomically, so a decision sees either the old set or
// the new one, never a mix.
type Engine struct {
	// Logger receives evaluation failures.
	Logger *slog.Logger
	// Now is the clock for requests without a Time; tests replace it.
	Now func() time.Time

	cfg      Config
	source   func() (docs []Document, schemaName string, schemaText []byte, err error)
	set      atomic.Pointer[policySet]
	reloadMu sync.Mutex
	// trustSchema skips checkSchema; only tests set it.
	trustSchema bool
	scratch     sync.Pool // *[]int32 candidate buffers
	cache       entityCache
}

var _ broker.Decider = (*Engine)(nil)

// New loads and validates the policy files cfg names. It returns an
// error naming the file and position of every policy that does not parse,
// names an attribute, entity type or action the schema lacks, or carries a
// bad annotation; and for a schema that does not describe Stint's requests.
func New(cfg Config) (*Engine, error) {
	p := newEngine(cfg)
	p.source = p.readFiles
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// NewFromDocuments builds a Policy from policy texts rather than files,
// validated against schemaText (nil: DefaultSchema). cfg.Files, cfg.Schema
// and cfg.FS are ignored, and Reload validates the same documents again.
func NewFromDocuments(docs []Document, schemaText []byte, cfg Config) (*Engine, error) {
	schemaName := "schema"
	if schemaText == nil {
		schemaName, schemaText = "embedded stint.cedarschema", DefaultSchema
	}
	p := newEngine(cfg)
	p.source = func() ([]Document, string, []byte, error) { return docs, schemaName, schemaText, nil }
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

func newEngine(cfg Config) *Engine {
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	p := &Engine{Logger: slog.New(slog.DiscardHandler), Now: time.Now, cfg: cfg}
	p.scratch.New = func() any { b := make([]int32, 0, 64); return &b }
	return p
}

// Reload reads and validates the policies again and, if they are valid,
// swaps them in. On error the policies in force stay in force.
func (p *Engine) Reload() error {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	docs, schemaName, schemaText, err := p.source()
	if err != nil {
		return err
	}
	set, err := compilePolicySet(docs, schemaName, schemaText, p.cfg.DefaultApproverGroup, p.trustSchema)
	if err != nil {
		return err
	}
	p.set.Store(set)
	return nil
}

// readFiles reads the policy files and schema the configuration names.
func (p *Engine) readFiles() ([]Document, string, []byte, error) {
	docs := make([]Document, 0, len(p.cfg.Files))
	var errs []error
	for _, name := range p.cfg.Files {
		b, err := p.readFile(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("read policy file: %w", err))
			continue
		}
		docs = append(docs, Document{Name: name, Text: b})
	}
	schemaName, schemaText := "embedded stint.cedarschema", DefaultSchema
	if p.cfg.Schema != "" {
		b, err := p.readFile(p.cfg.Schema)
		if err != nil {
			errs = append(errs, fmt.Errorf("read policy schema: %w", err))
		}
		schemaName, schemaText = p.cfg.Schema, b
	}
	return docs, schemaName, schemaText, errors.Join(errs...)
}

func (p *Engine) readFile(name string) ([]byte, error) {
	if p.cfg.FS != nil {
		return fs.ReadFile(p.cfg.FS, name)
	}
	return os.ReadFile(name)
}

// Policies returns the policies in force, in load order.
func (p *Engine) Policies() []Info { return p.set.Load().infos() }

// Schema names the schema the policies in force were validated against.
func (p *Engine) Schema() string { return p.set.Load().schemaName }

// Location is the time zone of context.hour and context.weekday.
func (p *Engine) Location() *time.Location { return p.cfg.Location }

// Decide implements broker.Decider. It never returns an error: a request that
// policy cannot evaluate (an evaluation error in any policy, including a
// forbid that cedar-go would skip, or a request without agent or role) is
// denied with the reason.
func (p *Engine) Decide(_ context.Context, req broker.DecisionRequest) (broker.Decision, error) {
	return p.decide(req, true), nil
}

func (p *Engine) decide(req broker.DecisionRequest, indexed bool) broker.Decision {
	set := p.set.Load()
	r, err := buildRequest(req, p.cfg.Location, p.Now(), &p.cache)
	if err != nil {
		p.Logger.Warn("policy cannot evaluate the request; denied", "err", err)
		return broker.Decision{Outcome: broker.OutcomeDeny, Reasons: []string{
			fmt.Sprintf("The request cannot be evaluated: %s. A request policy cannot decide is denied.", err)}}
	}
	buf := p.scratch.Get().(*[]int32)
	ev := set.evaluate(r, indexed, *buf)
	*buf = ev.candidates[:0]
	d := set.decide(ev, req)
	p.scratch.Put(buf)
	if len(ev.diag.Errors) > 0 {
		msgs := make([]string, len(ev.diag.Errors))
		for i, e := range ev.diag.Errors {
			msgs[i] = fmt.Sprintf("%s: %s", e.PolicyID, e.Message)
		}
		p.Logger.Warn("policy evaluation failed; denied", "agent", req.Agent.Name, "role", req.Role.Name,
			"action", string(req.Action), "errors", msgs)
	}
	return d
}

func subjectOf(req broker.DecisionRequest) string {
	verb := "request"
	if req.Action == broker.ActionExtend {
		verb = "extend a lease on"
	}
	return fmt.Sprintf("agent %s to %s role %s", req.Agent.Name, verb, req.Role.Name)
}

// Explanation is why one request gets its decision.
type Explanation struct {
	Decision broker.Decision `json:"decision"`
	// Permits and Forbids are every policy that matched, in load order.
	Permits []Info `json:"permits"`
	Forbids []Info `json:"forbids"`
	// Errors are the policies that failed to evaluate, with Cedar's message.
	Errors []EvalError `json:"errors,omitempty"`
	// Evaluated is how many policies the scope index selected; Total is the
	// size of the set.
	Evaluated int `json:"evaluated"`
	Total     int `json:"total"`
	// Principal, Resource and Context are what policy saw, as Cedar JSON.
	Principal string `json:"principal"`
	Resource  string `json:"resource"`
	Context   string `json:"context"`
}

// EvalError is a policy that failed to evaluate.
type EvalError struct {
	Policy  Info   `json:"policy"`
	Message string `json:"message"`
}

// Explain decides req as Decide does and also reports every policy that
// matched or failed, and the entities and context policy saw.
func (p *Engine) Explain(req broker.DecisionRequest) (*Explanation, error) {
	set := p.set.Load()
	r, err := buildRequest(req, p.cfg.Location, p.Now(), nil)
	if err != nil {
		return nil, err
	}
	ev := set.evaluate(r, true, nil)
	x := &Explanation{
		Decision:  set.decide(ev, req),
		Permits:   []Info{},
		Forbids:   []Info{},
		Evaluated: ev.evaluated,
		Total:     len(set.policies),
	}
	// Cedar reports only forbids when one matches, so evaluate each policy
	// on its own to list every match.
	for _, i := range set.index.candidates(nil, r.req.Principal, r.req.Action, r.req.Resource) {
		one := policySubset{set: set, idx: []int32{i}}
		d, diag := cedar.Authorize(one, r.entities, r.req)
		info := set.policies[i].info.clone()
		switch {
		case len(diag.Errors) > 0:
			x.Errors = append(x.Errors, EvalError{Policy: info, Message: diag.Errors[0].Message})
		case len(diag.Reasons) == 0:
		case info.Forbid():
			x.Forbids = append(x.Forbids, info)
		case d == cedar.Allow:
			x.Permits = append(x.Permits, info)
		}
	}
	x.Principal = entityJSON(r.entities.principal)
	x.Resource = entityJSON(r.entities.resource)
	if b, err := r.req.Context.MarshalJSON(); err == nil {
		x.Context = string(b)
	}
	return x, nil
}

func entityJSON(e cedar.Entity) string {
	b, err := e.MarshalJSON()
	if err != nil {
		return e.UID.String()
	}
	return string(b)
}
