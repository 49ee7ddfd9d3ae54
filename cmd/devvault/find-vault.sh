#!/bin/sh
# Prints the Vault server binary that `make run` and `make test` use: a `vault`
# on the PATH whose version is supported (Vault 1.21 or a later 1.x, the
# release Stint's development setup is tested with), or else the argument
# (bin/vault, which make builds from this directory).
# Usage: find-vault.sh BUILT_VAULT
set -eu
built=${1:?usage: find-vault.sh BUILT_VAULT}
min_minor=21

v=$(command -v vault 2>/dev/null || true)
if [ -z "$v" ] || [ "$(readlink -f "$v" 2>/dev/null || echo "$v")" = "$(readlink -f "$built" 2>/dev/null || echo "$built")" ]; then
	echo "$built" # none, or the one make builds (bin/ on the PATH)
	exit 0
fi
# "Vault v1.21.0 (…), built …", "Vault v1.21.0+ent …"
ver=$("$v" version 2>/dev/null | sed -n 's/^Vault v\([0-9][0-9]*\)\.\([0-9][0-9]*\)\..*/\1 \2/p' | head -n 1)
set -- $ver
if [ "${1:-}" = 1 ] && [ "${2:-0}" -ge "$min_minor" ]; then
	echo "$v"
else
	echo "$built"
fi
