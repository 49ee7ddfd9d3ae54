package main

import (
	"bytes"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLeasesHelpHidesKey guards against a secret in help output: the key's
// default comes from STINT_KEY at run time and must never be printed.
func TestLeasesHelpHidesKey(t *testing.T) {
	const key = "stint_ak_do-not-print-me"
	t.Setenv("STINT_KEY", key)
	for _, args := range [][]string{{"leases", "--help"}, {"leases", "request", "--help"}, {"leases", "release", "--help"}} {
		var out bytes.Buffer
		root := newRootCommand(&out, &out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.Contains(out.String(), "STINT_KEY") {
			t.Fatalf("%v: help does not mention STINT_KEY:\n%s", args, out.String())
		}
		if strings.Contains(out.String(), key) {
			t.Fatalf("%v: help prints the API key", args)
		}
	}
}

// TestLeasesExtend runs `stint leases extend` against an HTTPS server
// trusted through --cacert: it posts the ttl to the lease's extend endpoint
// with the agent's key and prints the lease the server answers; a refusal
// is an error carrying the server's message.
func TestLeasesExtend(t *testing.T) {
	const key = "stint_ak_test"
	var got struct{ method, path, auth, body string }
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.method, got.path, got.auth, got.body = r.Method, r.URL.Path, r.Header.Get("Authorization"), string(b)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(got.body, `"ttl":"1s"`) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"code":"invalid","message":"TTL 1s is below the minimum of 15s for role \"db-readonly\" (min_ttl), so that no credential outlives its window.","field":"ttl"}}`)
			return
		}
		io.WriteString(w, `{"id":"lease-1","state":"active","ttl":"30m0s","extensions":1,"expires_at":"2026-03-04T10:30:00Z"}`)
	}))
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	args := func(extra ...string) []string {
		return append([]string{"leases", "--addr", srv.URL, "--key", key, "--cacert", caFile, "extend", "lease-1", "-o", "json"}, extra...)
	}

	out, err := runCLI(t, "", args("--ttl", "10m")...)
	if err != nil {
		t.Fatalf("extend: %v\n%s", err, out)
	}
	if got.method != "POST" || got.path != "/v1/leases/lease-1/extend" || got.auth != "Bearer "+key || got.body != `{"ttl":"10m"}` {
		t.Fatalf("request = %+v", got)
	}
	if !strings.Contains(out, `"ttl": "30m0s"`) || !strings.Contains(out, `"extensions": 1`) {
		t.Fatalf("extend printed %q, want the extended lease", out)
	}

	_, err = runCLI(t, "", args("--ttl", "1s")...)
	if err == nil || !strings.Contains(userMessage(err), "below the minimum of 15s") {
		t.Fatalf("refused extension = %v, want the server's message", err)
	}

	// Without --cacert the server's certificate is not trusted.
	if _, err := runCLI(t, "", "leases", "--addr", srv.URL, "--key", key, "extend", "lease-1"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("extend without --cacert = %v, want a certificate error", err)
	}
}
