#!/bin/bash
# 50-parallel.sh - concurrent readers get exactly the source bytes.
#
# Four cats of four different 1-8 MiB files at once; four readers of
# disjoint slices of one 8 MiB file at once; and a find loop, a
# find-and-cat loop and a tar loop racing each other: every byte read
# matches the source and every tar stream is identical.  Each background
# job is bounded by timeout and its status checked.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"

RUN=$WORK/run
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$RUN" 5
D=$RUN/workspace/big
mkdir -p "$D"
head -c $((1 << 20)) /dev/urandom >"$D/f1.bin"
yes 'compressible line of text, repeated over and over' |
	head -c $((3 << 20)) >"$D/f3.txt"
{
	head -c $((2 << 20)) /dev/urandom
	head -c $((3 << 20)) /dev/zero
} >"$D/f5.mixed"
head -c $((8 << 20)) /dev/urandom >"$D/f8.bin"
mkckpt "$RUN" "$STORE/par.ckpt" -n par
ckpt_mount "$STORE" "$MNT"
S=$MNT/snapshots/par/workspace/big

# bg OUT CMD...: run CMD under a 20 s timeout in the background.
JOBS=()
bg() {
	local out=$1
	shift
	timeout -k 2 20 "$@" >"$out" 2>"$out.err" &
	track_pid $!
	JOBS+=("$!:$*")
}
# join: wait for every background job; fail on any non-zero status.
join_all() {
	local j pid rc
	for j in "${JOBS[@]}"; do
		pid=${j%%:*}
		rc=0
		wait "$pid" || rc=$?
		_untrack "$pid"
		[ "$rc" -eq 0 ] || fail "'${j#*:}' exited with status $rc"
	done
	JOBS=()
}

# ---- four files at once -------------------------------------------------------
for f in f1.bin f3.txt f5.mixed f8.bin; do
	bg "$WORK/out.$f" cat "$S/$f"
done
join_all
for f in f1.bin f3.txt f5.mixed f8.bin; do
	cmp "$WORK/out.$f" "$D/$f" || fail "parallel read of $f differs"
done

# ---- four slices of one file at once -------------------------------------------
for i in 0 1 2 3; do
	bg "$WORK/slice.$i" dd if="$S/f8.bin" bs=1M skip=$((i * 2)) count=2 \
		iflag=fullblock status=none
done
join_all
for i in 0 1 2 3; do
	dd if="$D/f8.bin" bs=1M skip=$((i * 2)) count=2 status=none |
		cmp - "$WORK/slice.$i" || fail "slice $i of f8.bin differs"
done

# ---- find, cat and tar racing ------------------------------------------------------
bg "$WORK/find.out" sh -c 'for i in 1 2 3 4 5; do find "$1" | wc -l; done' \
	sh "$MNT"
bg "$WORK/cat.out" sh -c 'for i in 1 2 3; do
	find "$1" -type f -print0 | sort -z | xargs -0 cat | cksum
	done' sh "$MNT/snapshots/par"
for i in 1 2; do
	bg "$WORK/tar.$i" sh -c 'for i in 1 2; do
		tar -cf - -C "$1" . | cksum; done' sh "$MNT/snapshots/par"
done
join_all
assert_eq 1 "$(sort -u "$WORK/find.out" | wc -l)" "find counts under load"
assert_eq 1 "$(sort -u "$WORK/cat.out" | wc -l)" "find+cat checksums"
assert_eq 1 "$(sort -u "$WORK/tar.1" "$WORK/tar.2" | wc -l)" "tar checksums"
# allcat DIR: checksum of every tier file under DIR, in sorted path order.
allcat() {
	timeout 30 sh -c 'cd "$1" && find world workspace session -type f \
		-print0 | sort -z | xargs -0 cat | cksum' sh "$1"
}
want=$(allcat "$RUN")
got=$(allcat "$MNT/snapshots/par")
assert_eq "$want" "$got" "all content, read after the race"

daemon_alive
ckpt_umount "$MNT"
exit 0
