package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
	"github.com/stint-broker/stint/leases/vault/vaulttest"
	"github.com/stint-broker/stint/web/client"
)

// TestExecLeaseAndWindow runs the built stint exec against a running Stint
// with the development Vault and PostgreSQL, for what TestExec leaves out:
// a lease approved elsewhere and activated by exec (--lease), the window's
// end with and without --extend, --env-file, and the exit status of a wait
// for approval that is interrupted.
func TestExecLeaseAndWindow(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		missingService(t, "psql is not installed: install the PostgreSQL client (apt-get install postgresql-client)")
	}
	dv := vaulttest.Start(t)
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.cedar")
	// Low roles at once (and their extensions), medium ones after one
	// approval from security.
	if err := os.WriteFile(policy, []byte(matrixPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e2eConfig(t, dv, filepath.Join(dir, "stint.db"))
	cfg.Policy.Files = []string{policy}
	cfg.Approvers = []*broker.Approver{{Email: "dana@example.com", Name: "Dana", Groups: []string{"security"}}}
	for _, r := range cfg.Roles {
		if r.Name == "db-readonly" {
			r.MaxExtensions = 1
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := startStint(t, dv, cfg, nil)
	_, key := s.newAgent(t, "exec-window-bot")
	bin := buildStint(t)
	env := []string{"STINT_ADDR=" + s.url, "STINT_KEY=" + key}
	agent, err := client.New(s.url, client.WithAPIKey(key))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	leaseOf := func(t *testing.T, id string) *client.Lease {
		t.Helper()
		l, err := agent.Lease(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	t.Run("LeaseApprovedElsewhere", func(t *testing.T) {
		l, err := agent.RequestLease(ctx, client.LeaseRequest{Role: "vault-token", TTL: "5m", Task: "rotate a secret"})
		if err != nil || l.State != client.StatePending {
			t.Fatalf("request = %+v, %v; want pending", l, err)
		}
		approver := approverContext(ctx, "dana@example.com")
		pending, err := s.Approvals.FindPendingApprovals(approver)
		if err != nil || len(pending) != 1 || pending[0].Lease.ID != l.ID {
			t.Fatalf("pending approvals = %v, %v", pending, err)
		}
		if _, err := s.Approvals.Approve(approver, l.ID, pending[0].Digest); err != nil {
			t.Fatal(err)
		}
		dump := filepath.Join(t.TempDir(), "env")
		r := runExecBin(t, bin, env, "exec", "--lease", l.ID, "--", "sh", "-c", `env > "$0"`, dump)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		child := readEnvDump(t, dump)
		token := child["VAULT_TOKEN"]
		if token == "" || child["STINT_LEASE_ID"] != l.ID || child["STINT_TASK"] != "rotate a secret" {
			t.Fatalf("VAULT_TOKEN set: %v, STINT_LEASE_ID=%q STINT_TASK=%q; want the approved lease's token and task", token != "", child["STINT_LEASE_ID"], child["STINT_TASK"])
		}
		got := leaseOf(t, l.ID)
		if got.ActivatedAt == nil || got.State != client.StateReleased {
			t.Fatalf("the lease after exec: %+v; want activated by exec, then released", got)
		}
		// The token was revoked with the lease.
		if code := vaultRead(t, dv, token, "secret/data/agents/x"); code != 403 {
			t.Fatalf("the released token reads Vault: %d, want 403", code)
		}
		// An ended lease cannot be used again: refused, the command not run.
		marker := filepath.Join(t.TempDir(), "ran")
		r = runExecBin(t, bin, env, "exec", "--lease", l.ID, "--", "touch", marker)
		if r.code != exitExecRefused || !strings.Contains(r.stderr, "is released") {
			t.Fatalf("exec --lease of a released lease: exit %d, %q; want %d", r.code, r.stderr, exitExecRefused)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("the command ran")
		}
	})

	t.Run("InterruptedWhileWaiting", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "ran")
		cmd := exec.Command(bin, "exec", "--role", "vault-token", "--ttl", "5m", "--task", "never approved", "--", "touch", marker)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var id string
		waitFor(t, "the pending lease", func() bool {
			page, err := agent.Leases(ctx, client.LeaseFilter{Task: "never approved", States: []string{client.StatePending}})
			if err == nil && len(page.Leases) == 1 {
				id = page.Leases[0].ID
			}
			return id != ""
		})
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitExecNoDecision || !strings.Contains(errb.String(), "interrupted") {
			t.Fatalf("SIGINT while waiting: %v, stderr %q; want exit %d", err, errb.String(), exitExecNoDecision)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("the command ran without its credential")
		}
		if l := leaseOf(t, id); l.State != client.StateCanceled {
			t.Fatalf("the lease after the interrupt is %s, want canceled", l.State)
		}
	})

	t.Run("EnvFile", func(t *testing.T) {
		dump := filepath.Join(t.TempDir(), "env")
		r := runExecBin(t, bin, env, "exec", "--role", "db-readonly", "--ttl", "1m", "--env-file", "--",
			"sh", "-c", `env > "$0"; ls -l "$STINT_ENV_FILE" | cut -c1-10; set -a; . "$STINT_ENV_FILE"; set +a; psql -tAc 'select current_user'`, dump)
		if r.code != 0 {
			t.Fatalf("exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		child := readEnvDump(t, dump)
		if len(lines) != 2 || lines[0] != "-rw-------" || !strings.HasPrefix(lines[1], "v-") {
			t.Fatalf("stdout %q: want the file's mode 0600 and psql logged in as the minted user from the file", r.stdout)
		}
		if child["PGPASSWORD"] != "" || child["PGUSER"] != "" || child["DATABASE_URL"] != "" || child["STINT_ENV_FILE"] == "" {
			t.Fatalf("with --env-file the credential is in the environment: %v", child)
		}
		if _, err := os.Stat(child["STINT_ENV_FILE"]); !os.IsNotExist(err) {
			t.Fatalf("the env file outlived the command: %v", err)
		}
		if l := leaseOf(t, child["STINT_LEASE_ID"]); l.State != client.StateReleased {
			t.Fatalf("lease after exit: %s", l.State)
		}
	})

	// The two window tests wait for real windows (15s, the role's minimum)
	// side by side.
	t.Run("Window", func(t *testing.T) {
		t.Run("SIGTERMAtTheEnd", func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			r := runWindowExec(t, bin, env, "--ttl", "15s", "--warn-before", "5s")
			if r.code != 0 || !strings.Contains(r.stdout, "got-term") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want the command to hear SIGTERM and exit 0", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stderr, "the command gets SIGTERM then") || !strings.Contains(r.stderr, "window ended; sending the command SIGTERM") {
				t.Fatalf("stderr %q: want the warning before the end and the notice at it", r.stderr)
			}
			if took := time.Since(start); took < 14*time.Second {
				t.Fatalf("SIGTERM after %s, before the 15s window ended", took)
			}
			id := strings.TrimSpace(strings.TrimPrefix(r.stdout[:strings.Index(r.stdout, "\n")], "lease "))
			if l := leaseOf(t, id); l.Extensions != 0 || !l.Ended() {
				t.Fatalf("lease %s: %+v; want ended without extensions", id, l)
			}
		})
		t.Run("Extend", func(t *testing.T) {
			t.Parallel()
			r := runWindowExec(t, bin, env, "--ttl", "16s", "--warn-before", "5s", "--extend")
			if r.code != 0 || !strings.Contains(r.stdout, "outlived") || strings.Contains(r.stdout, "got-term") {
				t.Fatalf("exit %d, stdout %q, stderr %q; want the command to outlive its first window untouched", r.code, r.stdout, r.stderr)
			}
			id := strings.TrimSpace(strings.TrimPrefix(r.stdout[:strings.Index(r.stdout, "\n")], "lease "))
			l := leaseOf(t, id)
			if l.Extensions != 1 || l.State != client.StateReleased || l.TTL == "16s" {
				t.Fatalf("lease %s: extensions %d, state %s, ttl %s; want extended once, then released", id, l.Extensions, l.State, l.TTL)
			}
		})
	})
}

// runWindowExec runs a command under stint exec that prints its lease id,
// then runs past 20 seconds unless SIGTERM stops it: with --extend it
// outlives a window shorter than that.
func runWindowExec(t *testing.T, bin string, env []string, flags ...string) execRun {
	t.Helper()
	args := append(append([]string{"exec", "--role", "db-readonly"}, flags...), "--",
		"sh", "-c", `echo "lease $STINT_LEASE_ID"; trap 'echo got-term; exit 0' TERM; i=0; while [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done; psql -tAc 'select 1' >/dev/null && echo outlived`)
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errb strings.Builder
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
	}
	err := cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return execRun{code: code, stdout: out.String(), stderr: errb.String()}
}
