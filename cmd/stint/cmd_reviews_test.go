package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestReviewsAttestCommand: the owner and an admin attest the same role
// and `reviews attest` shows both attestations; another approver is told
// the review is not theirs to attest, not that it does not exist.
func TestReviewsAttestCommand(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "")
	cfg := policyConfigFor(t, t.TempDir())
	c := func(args ...string) []string { return append([]string{"--config", cfg}, args...) }
	if out, err := runCLI(t, "", c("agents", "create", "etl-bot", "--owner", "alice@example.com", "--label", "team=data")...); err != nil {
		t.Fatalf("create = %q, %v", out, err)
	}
	out, err := runCLI(t, "", c("reviews", "run")...)
	if err != nil {
		t.Fatalf("reviews run = %q, %v", out, err)
	}
	id := regexp.MustCompile(`(?m)^([0-9a-f-]{36})\s+access`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("reviews run opened no access review:\n%s", out)
	}

	_, err = runCLI(t, "", c("reviews", "attest", id[1], "db-readonly", "--keep", "--as", "mallory@example.com")...)
	if err == nil || !strings.Contains(userMessage(err), "not yours to attest") {
		t.Fatalf("a stranger attests = %v; want not yours to attest", err)
	}
	if out, err := runCLI(t, "", c("reviews", "attest", id[1], "db-readonly", "--keep", "--note", "nightly ETL", "--as", "alice@example.com")...); err != nil {
		t.Fatalf("owner attests = %q, %v", out, err)
	}
	out, err = runCLI(t, "", c("reviews", "attest", id[1], "db-readonly", "--keep", "--note", "confirmed")...)
	if err != nil {
		t.Fatalf("admin attests = %q, %v", out, err)
	}
	for _, want := range []string{"db-readonly attestations:", "keep by approver:alice@example.com: nightly ETL", "keep by admin:", ": confirmed"} {
		if !strings.Contains(out, want) {
			t.Errorf("reviews attest output lacks %q:\n%s", want, out)
		}
	}
}
