package main

import (
	"slices"

	logicalKv "github.com/hashicorp/vault-plugin-secrets-kv"
	logicalPki "github.com/hashicorp/vault/builtin/logical/pki"
	dbPostgres "github.com/hashicorp/vault/plugins/database/postgresql"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// registry is the plugin catalog's list of builtin plugins: the subset of
// Vault's builtinplugins.Registry that Stint's development and tests use. A
// mount or database connection naming any other plugin fails with Vault's
// own "plugin not found" error.
var registry = builtinRegistry{
	secrets: map[string]logical.Factory{
		"kv":  logicalKv.Factory,
		"pki": logicalPki.Factory,
	},
	databases: map[string]func() (any, error){
		"postgresql-database-plugin": dbPostgres.New,
	},
}

// builtinRegistry implements plugincatalog.BuiltinRegistry.
type builtinRegistry struct {
	secrets   map[string]logical.Factory
	databases map[string]func() (any, error)
}

// Get implements plugincatalog.BuiltinRegistry.
func (r builtinRegistry) Get(name string, pluginType consts.PluginType) (func() (any, error), bool) {
	switch pluginType {
	case consts.PluginTypeSecrets:
		f, ok := r.secrets[name]
		if !ok {
			return nil, false
		}
		return func() (any, error) { return f, nil }, true
	case consts.PluginTypeDatabase:
		f, ok := r.databases[name]
		return f, ok
	}
	return nil, false
}

// Keys implements plugincatalog.BuiltinRegistry.
func (r builtinRegistry) Keys(pluginType consts.PluginType) []string {
	var keys []string
	switch pluginType {
	case consts.PluginTypeSecrets:
		for k := range r.secrets {
			keys = append(keys, k)
		}
	case consts.PluginTypeDatabase:
		for k := range r.databases {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// Contains implements plugincatalog.BuiltinRegistry.
func (r builtinRegistry) Contains(name string, pluginType consts.PluginType) bool {
	_, ok := r.Get(name, pluginType)
	return ok
}

// DeprecationStatus implements plugincatalog.BuiltinRegistry. Every plugin
// here is supported.
func (r builtinRegistry) DeprecationStatus(name string, pluginType consts.PluginType) (consts.DeprecationStatus, bool) {
	if r.Contains(name, pluginType) {
		return consts.Supported, true
	}
	return consts.Unknown, false
}

// IsBuiltinEntPlugin implements plugincatalog.BuiltinRegistry: none are
// Enterprise plugins.
func (r builtinRegistry) IsBuiltinEntPlugin(string, consts.PluginType) bool {
	return false
}
