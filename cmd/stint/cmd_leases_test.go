package main

import (
	"bytes"
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
