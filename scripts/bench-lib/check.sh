#!/bin/bash
# scripts/bench-lib/check.sh - make check's proof that the benchmark still
# works: scripts/bench --quick on a tiny corpus, its report written to a
# temporary file (never BENCHMARKS.md).  No figure is ever asserted: only
# that the run ends well, bounded in time, and writes every table.
# Exit status: 0 pass, 1 fail, 77 skip (no /dev/fuse, no python3 or cc).
set -u
: "${SRCDIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
out=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-benchcheck.XXXXXX") || exit 99
trap 'rm -rf "$out"' EXIT

timeout -k 10 150 "$SRCDIR/scripts/bench" --quick --out "$out/BENCHMARKS.md"
rc=$?
[ $rc -eq 77 ] && exit 77
if [ $rc -ne 0 ]; then
	echo "FAIL: scripts/bench --quick exited $rc" >&2
	exit 1
fi
for want in '^| measurement | local | ckptfs | fuse-zip | archivemount | squashfuse |' \
	'^## Walking the tree' '^## Saving' '^## Targets' '^| find warm ↓ | [0-9]'; do
	if ! grep -q -- "$want" "$out/BENCHMARKS.md"; then
		echo "FAIL: the quick report has no line matching: $want" >&2
		cat "$out/BENCHMARKS.md" >&2
		exit 1
	fi
done
echo "PASS: scripts/bench --quick wrote a complete report"
