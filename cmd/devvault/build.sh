#!/usr/bin/env bash
# Builds the development Vault server (this directory) to the path given as
# the first argument, showing progress: the modules downloaded, then the
# packages compiled out of the total. Used by `make devvault`.
#
# -mod=mod lets the go command complete go.sum on a machine whose module cache
# lacks something; go.mod and go.sum are committed, so a normal build changes
# nothing. (Never `go mod tidy` here: it chases Vault's test imports and fails.)
set -euo pipefail

out=${1:?usage: build.sh OUTPUT}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$(dirname "$0")"
GO=${GO:-go}
start=$SECONDS

# Progress replaces its own line on a terminal, and is printed every 10%
# (or every 25 modules) in a log.
if [ -t 1 ]; then tty=1; else tty=0; fi

echo "devvault: resolving Vault v1.21.0's packages (a cold module cache downloads ~460 MB)…"
deps=$(mktemp)
trap 'rm -f "$deps"' EXIT
# go list prints "go: downloading M V" for each module it fetches.
if ! "$GO" list -mod=mod -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' . 2>&1 >"$deps" |
	awk -v tty=$tty '
		/^go: downloading / { n++; if (tty) printf "\r  downloaded %d modules (%s %s)\033[K", n, $3, $4; else if (n % 25 == 0) printf "  downloaded %d modules…\n", n; fflush(); next }
		{ if (tty && n) printf "\n"; print; fflush() }
		END { if (tty && n) printf "\n"; if (n) printf "  downloaded %d modules\n", n }'; then
	echo "devvault: resolving packages failed" >&2
	exit 1
fi
total=$(grep -c . "$deps" || true)
echo "devvault: compiling up to $total packages plus the standard library (first build: a few minutes; later: seconds)…"

# go build -v names each package as it compiles it (cached ones are not
# named); anything else it prints (errors) is passed through.
"$GO" build -mod=mod -v -trimpath -ldflags='-s -w' -o "$out" . 2>&1 |
	awk -v total="$total" -v tty=$tty '
		/^[^ :#]+$/ {
			if ($0 ~ /^vendor\// || $1 !~ /^[^\/]*\./) { std++; next }   # standard library
			n++
			if (tty) printf "\r  [%4d/%d] %s\033[K", n, total, $0
			else if (total && int(n * 10 / total) > shown) { shown = int(n * 10 / total); printf "  [%4d/%d] %d%%\n", n, total, shown * 10 }
			fflush(); next
		}
		{ if (tty) printf "\n"; print; fflush() }
		END { if (tty && n) printf "\n"; printf "  compiled %d packages (%d of the standard library)\n", n, std }'

echo "devvault: built $out in $((SECONDS - start))s"
