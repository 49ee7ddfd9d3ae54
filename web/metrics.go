package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stint-broker/stint/broker"
)

// MetricsSource is what the scrape-time gauges read. The store implements
// it; nothing on a request's path reads it.
type MetricsSource interface {
	// CountLeasesByState returns how many leases are in each state.
	CountLeasesByState(ctx context.Context) (map[broker.LeaseState]int, error)
	// RevocationQueue returns how many leases wait in the revocation retry
	// queue and when the one waiting longest entered it (zero if none).
	RevocationQueue(ctx context.Context) (depth int, oldest time.Time, err error)
}

// Metrics are Stint's Prometheus metrics, on a registry of their own. Gauges
// of stored state are read from Source at scrape time; counters and
// histograms are fed by the Observe methods, which the instrumented issuer
// and lease service (wired in cmd) and the authentication middleware call.
// Labels never hold lease, agent or user ids.
type Metrics struct {
	Registry *prometheus.Registry
	// TokenHash, when set, is the SHA-256 of the bearer token that
	// "GET /metrics" on the API listener requires. Without it, the API
	// listener does not serve /metrics (Handler still does, for a separate
	// listener).
	TokenHash *[sha256.Size]byte

	grantLatency *prometheus.HistogramVec
	decisions    *prometheus.CounterVec
	vaultLatency *prometheus.HistogramVec
	vaultErrors  *prometheus.CounterVec
	authFailures *prometheus.CounterVec
	commitHeld   prometheus.Histogram
	commitWrites prometheus.Histogram
}

// NewMetrics returns the metrics with the Go and process collectors and the
// scrape-time gauges read from src, with now as the clock.
func NewMetrics(src MetricsSource, now func() time.Time) *Metrics {
	return NewReplicaMetrics(src, now, "")
}

// NewReplicaMetrics is NewMetrics for one of several replicas: every series
// carries the label replica="<replica>", and stint_replica_info names it.
// The store's gauges (leases by state, the revocation queue) are the same
// on every replica: aggregate them with max, not sum. An empty replica adds
// no label.
func NewReplicaMetrics(src MetricsSource, now func() time.Time, replica string) *Metrics {
	reg := prometheus.NewRegistry()
	var to prometheus.Registerer = reg
	if replica != "" {
		to = prometheus.WrapRegistererWith(prometheus.Labels{"replica": replica}, reg)
		info := prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "stint_replica_info",
			Help: "Always 1; its replica label names this replica (replica.id, --replica-id).",
		})
		info.Set(1)
		to.MustRegister(info)
	}
	m := &Metrics{
		Registry: reg,
		grantLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stint_grant_duration_seconds",
			Help:    "Time to answer a lease request, by outcome (granted, pending, denied, error), Vault's mint included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stint_policy_decisions_total",
			Help: "Policy decisions on lease requests, by outcome (approve, approvals, deny).",
		}, []string{"outcome"}),
		vaultLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stint_vault_request_duration_seconds",
			Help:    "Duration of Vault calls, by operation (issue, revoke, list, ping).",
			Buckets: []float64{.0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15},
		}, []string{"op"}),
		vaultErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stint_vault_errors_total",
			Help: "Failed Vault calls, by operation and kind (unavailable, error).",
		}, []string{"op", "kind"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stint_auth_failures_total",
			Help: "Failed authentications, by channel (api, oauth, console, metrics).",
		}, []string{"channel"}),
		commitHeld: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "stint_store_commit_duration_seconds",
			Help: "How long each committed write transaction held the store's single writer, BEGIN to COMMIT. " +
				"Its rate(_sum) near 1 means the writer is saturated.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		commitWrites: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "stint_store_commit_writes",
			Help:    "Writes per committed write transaction: concurrent lease writes share one commit (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
	}
	to.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.grantLatency, m.decisions, m.vaultLatency, m.vaultErrors, m.authFailures,
		m.commitHeld, m.commitWrites,
		&storeCollector{src: src, now: now},
	)
	for _, o := range []string{"granted", "pending", "denied", "error"} {
		m.grantLatency.WithLabelValues(o)
	}
	for _, o := range []broker.Outcome{broker.OutcomeApprove, broker.OutcomeApprovals, broker.OutcomeDeny} {
		m.decisions.WithLabelValues(string(o))
	}
	for _, ch := range []string{"api", "oauth", "console", "metrics"} {
		m.authFailures.WithLabelValues(ch)
	}
	return m
}

// ObserveGrant records one lease request's duration and outcome.
func (m *Metrics) ObserveGrant(outcome string, d time.Duration) {
	m.grantLatency.WithLabelValues(outcome).Observe(d.Seconds())
}

// ObserveDecision counts one policy decision.
func (m *Metrics) ObserveDecision(outcome broker.Outcome) {
	m.decisions.WithLabelValues(string(outcome)).Inc()
}

// ObserveVault records one Vault call; errKind is "" on success, else
// "unavailable" or "error".
func (m *Metrics) ObserveVault(op string, d time.Duration, errKind string) {
	m.vaultLatency.WithLabelValues(op).Observe(d.Seconds())
	if errKind != "" {
		m.vaultErrors.WithLabelValues(op, errKind).Inc()
	}
}

// ObserveStoreCommit records one committed write transaction of the store:
// how many writes it held and how long it held the writer.
func (m *Metrics) ObserveStoreCommit(writes int, held time.Duration) {
	m.commitHeld.Observe(held.Seconds())
	m.commitWrites.Observe(float64(writes))
}

// ObserveAuthFailure counts one failed authentication on channel.
func (m *Metrics) ObserveAuthFailure(channel string) {
	m.authFailures.WithLabelValues(channel).Inc()
}

// Handler serves the registry in the Prometheus text format, without
// authentication: for a listener of its own.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry, Timeout: 10 * time.Second})
}

// storeCollector reads stored state at scrape time.
type storeCollector struct {
	src MetricsSource
	now func() time.Time
}

var (
	leasesDesc = prometheus.NewDesc("stint_leases", "Leases by state (end states count every lease ever ended so).",
		[]string{"state"}, nil)
	approvalsPendingDesc = prometheus.NewDesc("stint_approvals_pending", "Lease requests waiting for human approval.", nil, nil)
	queueDepthDesc       = prometheus.NewDesc("stint_revocation_queue_depth",
		"Leases whose revocation Vault has not confirmed yet (the durable retry queue).", nil, nil)
	queueAgeDesc = prometheus.NewDesc("stint_revocation_queue_oldest_age_seconds",
		"How long the oldest lease in the revocation queue has waited; 0 when the queue is empty.", nil, nil)
	scrapeErrorDesc = prometheus.NewDesc("stint_store_scrape_error",
		"1 if reading the store for this scrape failed.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- leasesDesc
	ch <- approvalsPendingDesc
	ch <- queueDepthDesc
	ch <- queueAgeDesc
	ch <- scrapeErrorDesc
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	failed := 0.0
	counts, err := c.src.CountLeasesByState(ctx)
	if err != nil {
		failed = 1
	} else {
		for _, s := range broker.LeaseStates {
			ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(counts[s]), string(s))
		}
		ch <- prometheus.MustNewConstMetric(approvalsPendingDesc, prometheus.GaugeValue, float64(counts[broker.LeasePending]))
	}
	depth, oldest, err := c.src.RevocationQueue(ctx)
	if err != nil {
		failed = 1
	} else {
		age := 0.0
		if depth > 0 && !oldest.IsZero() {
			age = max(c.now().Sub(oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(queueDepthDesc, prometheus.GaugeValue, float64(depth))
		ch <- prometheus.MustNewConstMetric(queueAgeDesc, prometheus.GaugeValue, age)
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, failed)
}

// registerMetricsRoutes serves "GET /metrics" on the API listener when a
// token hash is configured. The route is outside bearer authentication by
// API key: it checks its own token, so that a monitoring system needs no
// agent or admin credential.
func (s *Server) registerMetricsRoutes(e *echo.Echo) {
	if s.Metrics == nil || s.Metrics.TokenHash == nil {
		return
	}
	h := s.Metrics.Handler()
	e.GET("/metrics", func(c echo.Context) error {
		secret, ok := bearerSecret(c.Request().Header.Get(echo.HeaderAuthorization))
		sum := sha256.Sum256([]byte(secret))
		if !ok || subtle.ConstantTimeCompare(sum[:], s.Metrics.TokenHash[:]) != 1 {
			s.Metrics.ObserveAuthFailure("metrics")
			return broker.Errorf(broker.EUNAUTHORIZED, "Send the metrics token as \"Authorization: Bearer <token>\".")
		}
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
		h.ServeHTTP(c.Response(), c.Request())
		return nil
	})
}
