package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/stint-broker/stint/leases/vault/vaulttest"
)

// TestMetrics scrapes /metrics on the API listener after a real grant: the
// token is required, and the grant, its Vault mint, the lease's state and
// the store's commits all show.
func TestMetrics(t *testing.T) {
	dv := vaulttest.Start(t)
	const token = "metrics-scrape-token"
	sum := sha256.Sum256([]byte(token))
	cfg := e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db"))
	cfg.Metrics.TokenSHA256 = hex.EncodeToString(sum[:])
	s := startStint(t, dv, cfg, nil)
	_, key := s.newAgent(t, "etl")
	id, _ := s.lease(t, key, "db-readonly", "10m")
	t.Cleanup(func() { s.call(t, "DELETE", "/v1/leases/"+id, key, nil) })

	scrape := func(bearer string) (int, string) {
		req, _ := http.NewRequest("GET", s.url+"/metrics", nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, bearer := range []string{"", "wrong-token", key} {
		if status, _ := scrape(bearer); status != http.StatusUnauthorized {
			t.Errorf("scrape with bearer %q = %d, want 401", bearer, status)
		}
	}
	status, body := scrape(token)
	if status != http.StatusOK {
		t.Fatalf("scrape = %d %s", status, body)
	}
	// Every series carries the replica's id; the checks below leave it out.
	if !regexp.MustCompile(`(?m)^stint_replica_info\{replica="[^"]+"\} 1$`).MatchString(body) {
		t.Errorf("no stint_replica_info naming the replica in:\n%s", body)
	}
	body = regexp.MustCompile(`\{replica="[^"]*"\}`).ReplaceAllString(body, "")
	body = regexp.MustCompile(`,replica="[^"]*"`).ReplaceAllString(body, "")
	body = regexp.MustCompile(`\{replica="[^"]*",`).ReplaceAllString(body, "{")
	value := func(series string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no series %s in:\n%s", series, body)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for series, want := range map[string]float64{
		`stint_grant_duration_seconds_count{outcome="granted"}`:  1,
		`stint_vault_request_duration_seconds_count{op="issue"}`: 1,
		`stint_leases{state="active"}`:                           1,
		`stint_auth_failures_total{channel="metrics"}`:           3,
	} {
		if got := value(series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The grant's write-ahead row and its activation were committed, each
	// with its audit event, besides the agent's creation.
	if got := value(`stint_store_commit_writes_sum`); got < 3 {
		t.Errorf("stint_store_commit_writes_sum = %v, want at least 3", got)
	}
	if n, held := value(`stint_store_commit_duration_seconds_count`), value(`stint_store_commit_duration_seconds_sum`); n < 2 || held <= 0 {
		t.Errorf("store commits: %v held the writer %vs; want at least 2 taking time", n, held)
	}
}
