package policy

import (
	"embed"
	"io/fs"
)

//go:embed policies/*.cedar policies/*.cedarschema policies/*.yaml
var examples embed.FS

// ExamplePolicies holds the example policy files (guards.cedar,
// tiers.cedar), Stint's schema (stint.cedarschema) and a decision table for
// `stint policy test` (examples.test.yaml), at the root of the file system.
// `stint policy examples` prints or writes them.
var ExamplePolicies fs.FS = mustSub(examples, "policies")

// ExamplePolicyFiles names the example policy files in ExamplePolicies, in
// the order they load.
var ExamplePolicyFiles = []string{"guards.cedar", "tiers.cedar"}

// DefaultSchema is Stint's Cedar schema (policies/stint.cedarschema): the
// entities, actions and context of every request. Policies are validated
// against it unless the configuration names another.
var DefaultSchema = mustRead(ExamplePolicies, "stint.cedarschema")

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

func mustRead(fsys fs.FS, name string) []byte {
	b, err := fs.ReadFile(fsys, name)
	if err != nil {
		panic(err)
	}
	return b
}
