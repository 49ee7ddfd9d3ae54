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

	"github.com/stint-broker/stint/leases/vault/vaulttest"
	"github.com/stint-broker/stint/web/client"
)

// execRun is one run of the stint binary's exec command.
type execRun struct {
	code           int
	stdout, stderr string
}

// runExecBin runs bin with args and env (plus PATH and HOME) and returns its
// exit status and output.
func runExecBin(t *testing.T, bin string, env []string, args ...string) execRun {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return execRun{code: code, stdout: out.String(), stderr: errb.String()}
}

// readEnvDump reads `env` output into a map.
func readEnvDump(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	return out
}

// execLogin reports whether PostgreSQL accepts the credential in an env
// dump.
func execLogin(t *testing.T, child map[string]string) error {
	t.Helper()
	conn, err := pgLogin(context.Background(), map[string]any{
		"username": child["PGUSER"], "password": child["PGPASSWORD"],
		"host": child["PGHOST"], "port": child["PGPORT"], "database": child["PGDATABASE"],
	})
	if err != nil {
		return err
	}
	return conn.Close(context.Background())
}

// TestExec runs `stint exec` (the built binary) against a running Stint
// with the development Vault and PostgreSQL: psql logs in with the minted
// user, which cannot log in after the command exits; the API key never
// reaches the command; exit statuses and signals pass through; bad inputs
// never run the command and exit with their documented status.
func TestExec(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		missingService(t, "psql is not installed: install the PostgreSQL client (apt-get install postgresql-client)")
	}
	dv := vaulttest.Start(t)
	cfg := e2eConfig(t, dv, filepath.Join(t.TempDir(), "stint.db"))
	for _, r := range cfg.Roles {
		if r.Name == "vault-token" {
			r.AutoApprove = false // the built-in rule denies it
		}
		if r.Name == "db-readonly" {
			r.MaxExtensions = 2
		}
	}
	s := startStint(t, dv, cfg, nil)
	_, key := s.newAgent(t, "exec-bot")
	bin := buildStint(t)
	env := []string{"STINT_ADDR=" + s.url, "STINT_KEY=" + key}
	agent, err := client.New(s.url, client.WithAPIKey(key))
	if err != nil {
		t.Fatal(err)
	}
	lastLease := func(t *testing.T) *client.Lease {
		t.Helper()
		page, err := agent.Leases(context.Background(), client.LeaseFilter{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Leases) == 0 {
			return nil
		}
		return page.Leases[0]
	}

	t.Run("psql", func(t *testing.T) {
		dump := filepath.Join(t.TempDir(), "env")
		r := runExecBin(t, bin, append(env, "STINT_TASK=nightly-report", "SOME_SETTING=kept"),
			"exec", "--role", "db-readonly", "--ttl", "1m", "--",
			"sh", "-c", `env > "$0" && psql -tAc 'select current_user'`, dump)
		if r.code != 0 {
			t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		child := readEnvDump(t, dump)
		user := strings.TrimSpace(r.stdout)
		if user == "" || user != child["PGUSER"] || !strings.HasPrefix(user, "v-") {
			t.Fatalf("psql logged in as %q, PGUSER=%q; want the minted user", user, child["PGUSER"])
		}
		for _, name := range []string{"PGHOST", "PGPORT", "PGPASSWORD", "PGDATABASE", "DATABASE_URL"} {
			if child[name] == "" {
				t.Errorf("the command's environment lacks %s", name)
			}
		}
		if child["STINT_TASK"] != "nightly-report" || child["STINT_LEASE_ID"] == "" || child["SOME_SETTING"] != "kept" {
			t.Errorf("STINT_TASK=%q STINT_LEASE_ID=%q SOME_SETTING=%q", child["STINT_TASK"], child["STINT_LEASE_ID"], child["SOME_SETTING"])
		}
		raw, _ := os.ReadFile(dump)
		if strings.Contains(string(raw), key) || child["STINT_KEY"] != "" || child["STINT_ADDR"] != "" {
			t.Fatalf("the API key or Stint's settings reached the command:\n%s", raw)
		}
		if strings.Contains(r.stderr, child["PGPASSWORD"]) {
			t.Fatal("stint exec printed the password")
		}
		l, err := agent.Lease(context.Background(), child["STINT_LEASE_ID"])
		if err != nil || l.State != client.StateReleased || l.Task != "nightly-report" {
			t.Fatalf("lease after exit = %+v, %v; want released, task from STINT_TASK", l, err)
		}
		if err := execLogin(t, child); err == nil {
			t.Fatal("the minted user still logs in after the command exited")
		}
	})

	t.Run("pgpass", func(t *testing.T) {
		dump := filepath.Join(t.TempDir(), "env")
		r := runExecBin(t, bin, env, "exec", "--role", "db-readonly", "--ttl", "1m", "--pgpass", "--",
			"sh", "-c", `env > "$0"; ls -l "$PGPASSFILE" | cut -c1-10; psql -tAc 'select 1'`, dump)
		child := readEnvDump(t, dump)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "-rw-------") || !strings.HasSuffix(strings.TrimSpace(r.stdout), "1") {
			t.Fatalf("exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
		}
		if child["PGPASSWORD"] != "" || strings.Contains(child["DATABASE_URL"], ":"+"@") || child["PGPASSFILE"] == "" {
			t.Fatalf("with --pgpass the password is in the environment: %v", child)
		}
		if _, err := os.Stat(child["PGPASSFILE"]); !os.IsNotExist(err) {
			t.Fatalf("the pgpass file outlived the command: %v", err)
		}
	})

	t.Run("exit status", func(t *testing.T) {
		r := runExecBin(t, bin, env, "exec", "--role", "db-readonly", "--ttl", "1m", "--", "sh", "-c", "exit 7")
		if r.code != 7 || r.stderr != "" {
			t.Fatalf("exit %d, stderr %q; want 7 and nothing printed off a terminal", r.code, r.stderr)
		}
		if l := lastLease(t); l.State != client.StateReleased {
			t.Fatalf("lease after exit 7 = %s", l.State)
		}
		r = runExecBin(t, bin, env, "exec", "--role", "db-readonly", "--ttl", "1m", "--", "sh", "-c", "kill -SEGV $$")
		if r.code != 128+int(syscall.SIGSEGV) {
			t.Fatalf("a command killed by SIGSEGV: exit %d, want %d", r.code, 128+int(syscall.SIGSEGV))
		}
		if l := lastLease(t); l.State != client.StateReleased {
			t.Fatalf("lease after the crash = %s", l.State)
		}
	})

	t.Run("signals", func(t *testing.T) {
		for _, c := range []struct {
			sig    syscall.Signal
			script string
			want   int
		}{
			{syscall.SIGTERM, `trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.1; done`, 42},
			{syscall.SIGINT, `echo ready; exec sleep 30`, 128 + int(syscall.SIGINT)},
			{syscall.SIGHUP, `echo ready; exec sleep 30`, 128 + int(syscall.SIGHUP)},
			{syscall.SIGQUIT, `echo ready; exec sleep 30`, 128 + int(syscall.SIGQUIT)},
		} {
			cmd := exec.Command(bin, "exec", "--role", "db-readonly", "--ttl", "1m", "--", "sh", "-c", c.script)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
			stdout, _ := cmd.StdoutPipe()
			var errb strings.Builder
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			if !sc.Scan() || sc.Text() != "ready" {
				t.Fatalf("%v: the command did not start: %s", c.sig, errb.String())
			}
			cmd.Process.Signal(c.sig)
			var rest strings.Builder
			for sc.Scan() {
				rest.WriteString(sc.Text() + "\n")
			}
			err := cmd.Wait()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			if code != c.want {
				t.Errorf("%v to stint exec: exit %d, want %d (stderr %s)", c.sig, code, c.want, errb.String())
			}
			if c.sig == syscall.SIGTERM && !strings.Contains(rest.String(), "got-term") {
				t.Errorf("the command did not hear SIGTERM: %q", rest.String())
			}
			if l := lastLease(t); l.State != client.StateReleased {
				t.Errorf("%v: lease after the signal = %s, want released", c.sig, l.State)
			}
		}
	})

	t.Run("nested", func(t *testing.T) {
		// A nested stint exec joins the task with a lease of its own.
		dump := filepath.Join(t.TempDir(), "env")
		r := runExecBin(t, bin, env, "exec", "--role", "db-readonly", "--ttl", "1m", "--task", "outer-task", "--",
			"sh", "-c", `STINT_ADDR="$0" STINT_KEY="$1" "$2" exec --role db-readonly --ttl 1m -- sh -c 'env > "$0"' "$3"`,
			s.url, key, bin, dump)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		child := readEnvDump(t, dump)
		if child["STINT_TASK"] != "outer-task" {
			t.Fatalf("nested STINT_TASK = %q", child["STINT_TASK"])
		}
		page, err := agent.Leases(context.Background(), client.LeaseFilter{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Leases) != 2 || page.Leases[0].ID == page.Leases[1].ID || page.Leases[0].Task != "outer-task" || page.Leases[1].Task != "outer-task" {
			t.Fatalf("leases = %+v, want two of task outer-task", page.Leases)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "ran")
		before := lastLease(t)
		for _, c := range []struct {
			name string
			env  []string
			args []string
			want int
			say  string
		}{
			{"unknown role", env, []string{"--role", "no-such-role"}, exitExecRefused, "unknown role"},
			{"denied", env, []string{"--role", "vault-token"}, exitExecRefused, "human approval"},
			{"wrong key", []string{"STINT_ADDR=" + s.url, "STINT_KEY=stint_ak_wrong"}, []string{"--role", "db-readonly"}, exitExecAuth, "STINT_KEY"},
			{"unreachable", []string{"STINT_ADDR=http://127.0.0.1:1", "STINT_KEY=" + key}, []string{"--role", "db-readonly"}, exitExecUnreachable, "cannot reach"},
			{"no key", []string{"STINT_ADDR=" + s.url}, []string{"--role", "db-readonly"}, exitExecUsage, "STINT_KEY"},
			{"bad ttl", env, []string{"--role", "db-readonly", "--ttl", "1s"}, exitExecRefused, "ttl"},
			{"bad env", env, []string{"--role", "db-readonly", "--env", "1X=password"}, exitExecUsage, "not a variable name"},
			{"unknown field", env, []string{"--role", "db-readonly", "--env", "X=no_such_field"}, exitExecUsage, "no field"},
		} {
			r := runExecBin(t, bin, c.env, append(append([]string{"exec"}, c.args...), "--", "touch", marker)...)
			if r.code != c.want || !strings.Contains(r.stderr, c.say) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("%s: exit %d, stderr %q; want %d and one line saying %q", c.name, r.code, r.stderr, c.want, c.say)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("%s: the command ran", c.name)
			}
		}
		r := runExecBin(t, bin, env, "exec", "--role", "db-readonly", "--", "no-such-command-xyz")
		if r.code != exitExecNoCommand || !strings.Contains(r.stderr, "not found") {
			t.Errorf("command not found: exit %d, %q", r.code, r.stderr)
		}
		// Nothing was left live: the failed field lookup released its
		// lease, and no lease is active.
		page, err := agent.Leases(context.Background(), client.LeaseFilter{States: []string{client.StateActive, client.StateApproved, client.StatePending}})
		if err != nil || page.Total != 0 {
			t.Fatalf("live leases after the bad inputs = %+v, %v", page, err)
		}
		if after := lastLease(t); after.ID == before.ID {
			t.Log("no lease was requested by any bad input")
		}
	})
}
