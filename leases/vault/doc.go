// Package vault implements leases.Issuer with HashiCorp Vault. It is the only
// package that imports github.com/hashicorp/vault/api.
//
// Issuer mints database credentials (database/creds/<role>), Vault tokens
// (auth/token/create[/<role>]) and any other leased secret, keeps every Vault
// lease no longer than the task window, and revokes with verification.
//
// DevServer runs a real Vault server binary (built by make devvault) with file
// storage for development and tests, and configures the database engine,
// policy and token role that DevRoles name. Package vaulttest starts one for
// a test.
package vault
