package sqlite_test

import (
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// TestSubjectTokenUsesShared checks that two stores on one database, as two
// replicas are, share the token exchange replay cache, and that expired
// entries are deleted rather than kept.
func TestSubjectTokenUsesShared(t *testing.T) {
	one, path := MustOpenDB(t)
	two := MustOpenPath(t, path)
	raw := MustOpenRaw(t, path)
	const idp = "https://idp.example.com"
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	if err := one.UseSubjectToken(t.Context(), idp, "u1", t0.Add(5*time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	if err := two.UseSubjectToken(t.Context(), idp, "u1", t0.Add(5*time.Minute), t0.Add(time.Minute)); broker.ErrorCode(err) != broker.ECONFLICT {
		t.Fatalf("replay through the other store = %v, want ECONFLICT", err)
	}
	if err := two.UseSubjectToken(t.Context(), idp, "u2", t0.Add(20*time.Minute), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Past u1's expiry, any use purges it.
	if err := one.UseSubjectToken(t.Context(), idp, "u3", t0.Add(20*time.Minute), t0.Add(6*time.Minute)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := raw.QueryRowContext(t.Context(), `SELECT count(*) FROM subject_token_uses WHERE jti = 'u1'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("expired entry rows = %d, %v; want it purged", n, err)
	}
	if err := raw.QueryRowContext(t.Context(), `SELECT count(*) FROM subject_token_uses`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("live entries = %d, %v; want 2", n, err)
	}
}
