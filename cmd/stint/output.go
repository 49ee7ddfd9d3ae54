package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// addOutputFlag adds -o/--output to a command that shows data: "table" (the
// default, for people) or "json" (for programs).
func addOutputFlag(cmd *cobra.Command) {
	cmd.Flags().StringP("output", "o", "table", "output format: table or json")
}

// withOutput adds -o/--output to cmd and returns it.
func withOutput(cmd *cobra.Command) *cobra.Command {
	addOutputFlag(cmd)
	return cmd
}

// outputJSON reports whether the command was asked for JSON output, and
// refuses formats it does not know.
func outputJSON(cmd *cobra.Command) (bool, error) {
	f := cmd.Flags().Lookup("output")
	if f == nil {
		return false, nil
	}
	switch v := strings.ToLower(f.Value.String()); v {
	case "", "table":
		return false, nil
	case "json":
		return true, nil
	default:
		return false, usageError(fmt.Errorf("--output %q: use table or json", v))
	}
}

// show prints what a command shows: v as JSON with -o json, else the human
// form that human writes (tables, lines).
func show(cmd *cobra.Command, v any, human func(out io.Writer) error) error {
	asJSON, err := outputJSON(cmd)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), v)
	}
	return human(cmd.OutOrStdout())
}

// checkOutputFlag refuses an unknown -o value before a command does
// anything (root's PersistentPreRunE).
func checkOutputFlag(cmd *cobra.Command, _ []string) error {
	_, err := outputJSON(cmd)
	return err
}

// writeJSON writes v as indented JSON and a newline.
func writeJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct{ tw *tabwriter.Writer }

func newTable(out io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		// A tab or newline in agent-chosen text would break the layout.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(c)
		if cells[i] == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }
