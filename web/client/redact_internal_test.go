package client

import "testing"

// TestRedactKey: the public prefix is kept and nothing of the secret part,
// even when the secret part itself contains "_".
func TestRedactKey(t *testing.T) {
	for key, want := range map[string]string{
		"stint_ak_abcDEF123":       "stint_ak_[redacted]",
		"stint_ak_ab_cd_ef":        "stint_ak_[redacted]",
		"stint_ak__":               "stint_ak_[redacted]",
		"stint_cs_x_y":             "stint_cs_[redacted]",
		"some_other_token":         "[redacted]",
		"eyJhbGciOiJFUzI1NiJ9.x.y": "[redacted]",
		"":                         "[redacted]",
	} {
		if got := redactKey(key); got != want {
			t.Errorf("redactKey(%q) = %q, want %q", key, got, want)
		}
	}
}
