#!/usr/bin/env bash
# `make bench`: the long benchmarks (not part of `make test`). Results are printed; the
# numbers recorded in docs/perf.md come from these runs, with their conditions.
set -euo pipefail
build=${1:-build}
bin=$build/bin
for b in bench/*.sh; do
  [[ -x $b ]] || continue
  printf '\n== %s\n' "$b"
  "$b" "$build"
done
