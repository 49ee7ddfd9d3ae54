// Command devvault builds a real HashiCorp Vault server for Stint's development
// and tests. It is a nested module so the Stint module never depends on the
// Vault server (BUSL-1.1); it is never shipped inside Stint.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
