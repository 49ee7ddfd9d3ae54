package policy

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"

	"github.com/stint-broker/stint/broker"
)

// Entity types and actions of the Cedar model (see stint.cedarschema).
const (
	agentType = types.EntityType("Agent")
	roleType  = types.EntityType("Role")
	// actionType is Cedar's type for actions.
	actionType = types.EntityType("Action")
)

// attrType is the Cedar type of an attribute Stint provides.
type attrType int

const (
	attrString attrType = iota
	attrLong
	attrBool
	attrStringSet
	attrIPAddr
)

func (t attrType) String() string {
	return [...]string{"String", "Long", "Bool", "Set<String>", "ipaddr"}[t]
}

// matches reports whether a schema type is the type Stint provides.
func (t attrType) matches(st resolved.IsType) bool {
	switch st := st.(type) {
	case resolved.StringType:
		return t == attrString
	case resolved.LongType:
		return t == attrLong
	case resolved.BoolType:
		return t == attrBool
	case resolved.SetType:
		_, ok := st.Element.(resolved.StringType)
		return ok && t == attrStringSet
	case resolved.ExtensionType:
		return t == attrIPAddr && (st == "ipaddr" || st == "__cedar::ipaddr")
	}
	return false
}

// The attributes Stint puts on each request. A schema may declare fewer (then
// policies cannot use the others) but never more, so that a validated policy
// cannot name an attribute a request lacks. These tables and buildRequest
// change together; TestRequestConformsToSchema checks them against the
// embedded schema.
var (
	agentAttrs = map[string]attrType{
		"id": attrString, "name": attrString, "owner": attrString,
		"auth_method": attrString, "on_behalf_of": attrString,
	}
	roleAttrs = map[string]attrType{
		"name": attrString, "sensitivity": attrString, "sensitivity_rank": attrLong, "kind": attrString,
		"max_ttl_seconds": attrLong, "default_ttl_seconds": attrLong, "auto_approve": attrBool,
	}
	contextAttrs = map[string]attrType{
		"ttl_seconds": attrLong, "task": attrString, "justification_given": attrBool,
		"source_ip": attrIPAddr, "hour": attrLong, "weekday": attrLong, "risk_score": attrLong,
		"active_roles": attrStringSet, "breakglass": attrBool, "eligible": attrBool,
	}
	// sometimesAbsent are the context attributes a request may lack; a
	// schema must declare them optional.
	sometimesAbsent = map[string]bool{"source_ip": true}
)

// sensitivityRank orders sensitivities for policy comparisons.
var sensitivityRank = map[broker.Sensitivity]int64{
	broker.SensitivityLow: 1, broker.SensitivityMedium: 2, broker.SensitivityHigh: 3, broker.SensitivityCritical: 4,
}

// cedarRequest is a DecisionRequest as Cedar sees it.
type cedarRequest struct {
	req      cedar.Request
	entities requestEntities
}

// requestEntities is the entity store of one request: the principal and the
// resource, neither with parents. It saves building a map per decision.
type requestEntities struct {
	principal, resource cedar.Entity
}

// Get implements cedar.EntityGetter.
func (e requestEntities) Get(uid cedar.EntityUID) (cedar.Entity, bool) {
	switch uid {
	case e.principal.UID:
		return e.principal, true
	case e.resource.UID:
		return e.resource, true
	}
	return cedar.Entity{}, false
}

// entityCache keeps the Cedar entities of recent agents and roles: building
// their attribute records is most of the cost of a decision. An entry is
// used only if everything it was built from is unchanged, so a relabelled
// agent or a reloaded role is rebuilt.
type entityCache struct {
	mu     sync.Mutex
	agents map[agentKey]cachedAgent
	roles  map[*broker.Role]cachedRole
}

// maxCachedEntities bounds each of the cache's maps; when full it starts over.
const maxCachedEntities = 4096

type agentKey struct{ id, authMethod, onBehalfOf string }

type cachedAgent struct {
	name, owner string
	labels      map[string]string
	entity      cedar.Entity
}

type cachedRole struct {
	role   broker.Role
	entity cedar.Entity
}

func (c *entityCache) agent(a *broker.Agent, authMethod, onBehalfOf string) cedar.Entity {
	key := agentKey{a.ID, authMethod, onBehalfOf}
	c.mu.Lock()
	hit, ok := c.agents[key]
	c.mu.Unlock()
	if ok && hit.name == a.Name && hit.owner == a.Owner && maps.Equal(hit.labels, a.Labels) {
		return hit.entity
	}
	uid := cedar.NewEntityUID(agentType, cedar.String(a.Name))
	e := cedar.Entity{
		UID: uid,
		Attributes: cedar.NewRecord(cedar.RecordMap{
			"id":           cedar.String(a.ID),
			"name":         cedar.String(a.Name),
			"owner":        cedar.String(a.Owner),
			"auth_method":  cedar.String(authMethod),
			"on_behalf_of": cedar.String(onBehalfOf),
		}),
		Tags: stringRecord(a.Labels),
	}
	c.mu.Lock()
	if c.agents == nil || len(c.agents) >= maxCachedEntities {
		c.agents = map[agentKey]cachedAgent{}
	}
	c.agents[key] = cachedAgent{name: a.Name, owner: a.Owner, labels: maps.Clone(a.Labels), entity: e}
	c.mu.Unlock()
	return e
}

func (c *entityCache) role(r *broker.Role, rank int64) cedar.Entity {
	c.mu.Lock()
	hit, ok := c.roles[r]
	c.mu.Unlock()
	if ok && sameRole(&hit.role, r) {
		return hit.entity
	}
	e := cedar.Entity{
		UID: cedar.NewEntityUID(roleType, cedar.String(r.Name)),
		Attributes: cedar.NewRecord(cedar.RecordMap{
			"name":                cedar.String(r.Name),
			"sensitivity":         cedar.String(r.Sensitivity),
			"sensitivity_rank":    cedar.Long(rank),
			"kind":                cedar.String(r.Kind),
			"max_ttl_seconds":     cedar.Long(r.MaxTTL / time.Second),
			"default_ttl_seconds": cedar.Long(r.DefaultTTL / time.Second),
			"auto_approve":        cedar.Boolean(r.AutoApprove),
		}),
		Tags: stringRecord(r.Eligible),
	}
	c.mu.Lock()
	if c.roles == nil || len(c.roles) >= maxCachedEntities {
		c.roles = map[*broker.Role]cachedRole{}
	}
	c.roles[r] = cachedRole{role: broker.Role{Name: r.Name, Sensitivity: r.Sensitivity, Kind: r.Kind, MaxTTL: r.MaxTTL,
		DefaultTTL: r.DefaultTTL, AutoApprove: r.AutoApprove, Eligible: maps.Clone(r.Eligible)}, entity: e}
	c.mu.Unlock()
	return e
}

// sameRole compares the fields a role entity is built from.
func sameRole(a, b *broker.Role) bool {
	return a.Name == b.Name && a.Sensitivity == b.Sensitivity && a.Kind == b.Kind && a.MaxTTL == b.MaxTTL &&
		a.DefaultTTL == b.DefaultTTL && a.AutoApprove == b.AutoApprove && maps.Equal(a.Eligible, b.Eligible)
}

var contextMaps = sync.Pool{New: func() any { m := make(cedar.RecordMap, len(contextAttrs)); return &m }}

// buildRequest turns a decision request into Cedar's principal, action,
// resource, context and entities. Times are read in loc; a zero req.Time
// means now. It returns an error for a request policy cannot be asked about
// (no agent or role, an unknown action or sensitivity).
func buildRequest(r broker.DecisionRequest, loc *time.Location, now time.Time, cache *entityCache) (cedarRequest, error) {
	switch {
	case r.Agent == nil:
		return cedarRequest{}, errors.New("the request names no agent")
	case r.Role == nil:
		return cedarRequest{}, errors.New("the request names no role")
	case r.Action != broker.ActionRequest && r.Action != broker.ActionExtend:
		return cedarRequest{}, fmt.Errorf("unknown action %q", r.Action)
	}
	rank, ok := sensitivityRank[r.Role.Sensitivity]
	if !ok {
		return cedarRequest{}, fmt.Errorf("role %s has unknown sensitivity %q", r.Role.Name, r.Role.Sensitivity)
	}
	if cache == nil {
		cache = &entityCache{}
	}
	principal := cache.agent(r.Agent, r.AuthMethod, r.OnBehalfOf)
	resource := cache.role(r.Role, rank)

	t := r.Time
	if t.IsZero() {
		t = now
	}
	t = t.In(loc)
	weekday := int64(t.Weekday())
	if weekday == 0 {
		weekday = 7 // ISO: Monday 1 … Sunday 7
	}
	active := make([]cedar.Value, len(r.ActiveRoles))
	for i, name := range r.ActiveRoles {
		active[i] = cedar.String(name)
	}
	// NewRecord copies the map, so one map per goroutine is reused.
	mp := contextMaps.Get().(*cedar.RecordMap)
	ctx := *mp
	clear(ctx)
	ctx["ttl_seconds"] = cedar.Long(r.TTL / time.Second)
	ctx["task"] = cedar.String(r.Task)
	ctx["justification_given"] = cedar.Boolean(r.Justification != "")
	ctx["hour"] = cedar.Long(t.Hour())
	ctx["weekday"] = cedar.Long(weekday)
	ctx["risk_score"] = cedar.Long(r.RiskScore)
	ctx["active_roles"] = cedar.NewSet(active...)
	ctx["breakglass"] = cedar.Boolean(r.Breakglass)
	ctx["eligible"] = cedar.Boolean(r.Role.EligibleFor(r.Agent))
	if ip, ok := parseSourceIP(r.SourceIP); ok {
		ctx["source_ip"] = ip
	}
	record := cedar.NewRecord(ctx)
	contextMaps.Put(mp)
	return cedarRequest{
		req: cedar.Request{
			Principal: principal.UID,
			Action:    cedar.NewEntityUID(actionType, cedar.String(r.Action)),
			Resource:  resource.UID,
			Context:   record,
		},
		entities: requestEntities{principal: principal, resource: resource},
	}, nil
}

// parseSourceIP reads an address with or without a port; ok is false for an
// empty or unreadable one, which policy then sees as absent.
func parseSourceIP(s string) (cedar.IPAddr, bool) {
	if s == "" {
		return cedar.IPAddr{}, false
	}
	if ip, err := types.ParseIPAddr(s); err == nil {
		return ip, true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if ip, err := types.ParseIPAddr(host); err == nil {
			return ip, true
		}
	}
	return cedar.IPAddr{}, false
}

func stringRecord(m map[string]string) cedar.Record {
	if len(m) == 0 {
		return cedar.Record{}
	}
	rm := make(cedar.RecordMap, len(m))
	for k, v := range m {
		rm[cedar.String(k)] = cedar.String(v)
	}
	return cedar.NewRecord(rm)
}

// checkSchema returns an error naming each way the schema disagrees with the
// requests Stint builds: a missing Agent or Role type or request/extend
// action, an attribute Stint does not provide or provides with another
// type, parents, other entity types or actions (Stint's requests contain
// none), or a sometimes-absent attribute declared as required.
func checkSchema(s *resolved.Schema) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	checkRecord := func(what string, declared resolved.RecordType, provided map[string]attrType) {
		names := make([]string, 0, len(declared))
		for name := range declared {
			names = append(names, string(name))
		}
		sort.Strings(names)
		for _, name := range names {
			attr := declared[types.String(name)]
			want, ok := provided[name]
			switch {
			case !ok:
				add("%s declares attribute %q, which Stint does not provide", what, name)
			case !want.matches(attr.Type):
				add("%s declares attribute %q with another type than the %s Stint provides", what, name, want)
			case sometimesAbsent[name] && !attr.Optional:
				add("%s must declare attribute %q optional (%s?: %s): Stint omits it when it is unknown", what, name, name, want)
			}
		}
	}
	for _, et := range []types.EntityType{agentType, roleType} {
		e, ok := s.Entities[et]
		if !ok {
			add("schema must declare entity type %s (outside any namespace)", et)
			continue
		}
		if len(e.ParentTypes) > 0 {
			add("entity type %s must not have parents: Stint's entities have none", et)
		}
		if e.Tags != nil {
			if _, ok := e.Tags.(resolved.StringType); !ok {
				add("entity type %s must have tags of type String (labels) or none", et)
			}
		}
		provided := agentAttrs
		if et == roleType {
			provided = roleAttrs
		}
		checkRecord("entity type "+string(et), e.Shape, provided)
	}
	for et := range s.Entities {
		if et != agentType && et != roleType {
			add("schema declares entity type %s; Stint's requests contain only Agent and Role", et)
		}
	}
	for et := range s.Enums {
		add("schema declares enumerated entity type %s; Stint's requests contain only Agent and Role", et)
	}
	for _, name := range []broker.Action{broker.ActionRequest, broker.ActionExtend} {
		uid := cedar.NewEntityUID(actionType, cedar.String(name))
		a, ok := s.Actions[uid]
		switch {
		case !ok:
			add("schema must declare action %s", name)
			continue
		case a.Entity.Parents.Len() > 0:
			add("action %s must not be in an action group: Stint's actions have no parents", name)
		case a.AppliesTo == nil:
			add("action %s must apply to principal Agent and resource Role", name)
			continue
		}
		if len(a.AppliesTo.Principals) != 1 || a.AppliesTo.Principals[0] != agentType ||
			len(a.AppliesTo.Resources) != 1 || a.AppliesTo.Resources[0] != roleType {
			add("action %s must apply to principal Agent and resource Role", name)
		}
		checkRecord("the context of action "+string(name), a.AppliesTo.Context, contextAttrs)
	}
	for uid := range s.Actions {
		if uid.Type != actionType || (uid.ID != cedar.String(broker.ActionRequest) && uid.ID != cedar.String(broker.ActionExtend)) {
			add("schema declares action %s; Stint asks only about request and extend", uid)
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}
