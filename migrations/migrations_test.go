package migrations_test

import (
	"fmt"
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/stint-broker/stint/migrations"
)

// TestFiles checks the conventions goose and reviewers rely on: numbered
// files, no gaps, an Up section and no Down section.
func TestFiles(t *testing.T) {
	name := regexp.MustCompile(`^(\d{4})_[a-z0-9_]+\.sql$`)
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			entries, err := fs.ReadDir(migrations.FS, dialect)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) == 0 {
				t.Fatal("no migrations")
			}
			for i, e := range entries {
				m := name.FindStringSubmatch(e.Name())
				if m == nil {
					t.Errorf("%s: want NNNN_what.sql", e.Name())
					continue
				}
				if got, want := m[1], fmt.Sprintf("%04d", i+1); got != want {
					t.Errorf("%s: number %s, want %s (no gaps, no duplicates)", e.Name(), got, want)
				}
				b, err := fs.ReadFile(migrations.FS, dialect+"/"+e.Name())
				if err != nil {
					t.Fatal(err)
				}
				text := string(b)
				if !strings.Contains(text, "-- +goose Up") {
					t.Errorf("%s: no -- +goose Up section", e.Name())
				}
				if strings.Contains(text, "-- +goose Down") {
					t.Errorf("%s: has a -- +goose Down section; history is never dropped", e.Name())
				}
				if begins, ends := strings.Count(text, "-- +goose StatementBegin"), strings.Count(text, "-- +goose StatementEnd"); begins != ends {
					t.Errorf("%s: %d StatementBegin but %d StatementEnd", e.Name(), begins, ends)
				}
			}
		})
	}
}
