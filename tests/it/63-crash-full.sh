#!/bin/bash
# 63-crash-full.sh - a save is all or nothing: kill -9 and a full disk.
#
# Crash: CRASH_ROUNDS times (20 unless set in the environment; at least
# half of the kills must hit a save in progress), a save of a ~150 MB
# workspace is under way when the daemon gets SIGKILL (at varied moments,
# some before its temporary file exists); then STORE holds no NAME.ckpt,
# only temporary leftovers (.NAME.ckpt.tmp-PID-N), never shown (by a second
# mount of the same STORE, which also keeps its own view); the next mount
# removes them, and the checkpoints already there read as before.
# Full disk: with STORE on a 4 MiB tmpfs, a save of 10 MiB of random data
# fails with ENOSPC, leaves STORE exactly as it was, is explained in
# errors/NAME (no_space); the mount keeps serving the older checkpoint, and
# once the big file is gone from the source a save succeeds.
# shellcheck disable=SC2010 # ls | grep on names this test chose
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need python3 python3
# A pyenv shim costs 0.1 s a call: call the interpreter it resolves to.
PY3=$(python3 -c 'import sys; print(sys.executable)')
python3() { "$PY3" "$@"; }
: "${CRASH_ROUNDS:=20}"
[ "$CRASH_ROUNDS" -ge 2 ] 2>/dev/null || fail "CRASH_ROUNDS=$CRASH_ROUNDS: want 2 or more"
: "${CKPTFS_BACKENDS:=$SRCDIR/backends}"
export CKPTFS_BACKENDS

STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"

# The full-disk half needs a tmpfs: mount it first, so that a machine
# without the right says so at once.
SMALL=$WORK/small
mkdir -p "$SMALL"
HAVE_TMPFS=
if [ "$(id -u)" -eq 0 ] &&
	mount -t tmpfs -o size=4m,mode=0755 ckptfs-it-small "$SMALL" 2>/dev/null; then
	HAVE_TMPFS=1
fi
_cleanup_63() {
	local rc=$?
	set +e # or the (exit) below would end the trap before _cleanup
	# Detached now, freed once lib.sh's cleanup has ended the daemons
	# that hold it.
	[ -n "$HAVE_TMPFS" ] && umount -l "$SMALL" 2>/dev/null
	(exit "$rc")
	_cleanup
}
trap _cleanup_63 EXIT

# ---- crash: kill -9 mid-save ------------------------------------------------------
RUN=$WORK/run
make_run "$WORK/old" 1
mkckpt "$WORK/old" "$STORE/gen1.ckpt" -n gen1
sha_gen1=$(sha256sum <"$STORE/gen1.ckpt")
mkdir -p "$RUN/world" "$RUN/workspace/big"
echo '{"world": 1}' >"$RUN/world/w.json"
for i in 1 2 3 4 5 6; do
	# Base64 text: deflate gains on it, so a save is slow enough to be
	# killed in the middle (random bytes are stored, which is fast).
	head -c $((19 << 20)) /dev/urandom | base64 -w 76 \
		>"$RUN/workspace/big/r$i.bin"
done

# leftovers: what STORE holds beyond gen1.ckpt.
leftovers() { ls -A "$STORE" | grep -vx 'gen1.ckpt' || true; }
# check_store_after_kill N: no N.ckpt; nothing but temporary files.
check_store_after_kill() {
	local f
	[ ! -e "$STORE/$1.ckpt" ] || return 2
	assert_eq "$sha_gen1" "$(sha256sum <"$STORE/gen1.ckpt")" \
		"gen1.ckpt after kill $1"
	while read -r f; do
		[ -n "$f" ] || continue
		[[ $f =~ ^\.$1\.ckpt\.tmp-[0-9]+-[0-9]+$ ]] ||
			[[ $f =~ ^\.checkpoint\.json\.tmp-[0-9]+$ ]] ||
			fail "after kill -9 mid-save of $1, STORE holds '$f'"
	done < <(leftovers)
}
# check_mount_fresh: a fresh mount removed every leftover and shows gen1
# as before.
check_mount_fresh() {
	wait_for 2 test -z "$(leftovers)" ||
		fail "the next mount left these in STORE: $(leftovers | tr '\n' ' ')"
	assert_eq gen1 "$(ls -A "$MNT/snapshots")" "snapshots/ after a crash"
	out=$(timeout 20 diff -r --no-dereference "$WORK/old/workspace" \
		"$MNT/snapshots/gen1/workspace" 2>&1) ||
		fail "gen1 after a crash: $out"
}

# has_tmp N: a temporary file of the save of N is in STORE.
has_tmp() { compgen -G "$STORE/.$1.ckpt.tmp-*" >/dev/null; }
# all_gone PID: every thread of PID has ended.  A thread stuck in the
# kernel (in a FUSE notification) outlives SIGKILL and keeps the FUSE
# connection, and every request on it, alive: then waiting would hang.
all_gone() {
	[ ! -d "/proc/$1/task" ] ||
		[ "$(find "/proc/$1/task" -mindepth 1 -maxdepth 1 | wc -l)" -le 1 ] &&
		! pid_alive "$1"
}
# stuck PID: the kernel functions that PID's remaining threads wait in.
stuck() {
	local t
	for t in /proc/"$1"/task/*; do
		echo "$(cat "$t/wchan" 2>/dev/null)"
	done | sort -u | tr '\n' ' '
}
# A second mount of the same STORE, with no source: it must never show a
# save's temporary file, nor lose gen1, and is not disturbed by the crashes.
VIEW=$WORK/view
ckpt_mount "$STORE" "$VIEW"
view_ok() {
	local got n
	for ((n = 0; n < 40; n++)); do
		got=$(timeout 5 ls -A "$VIEW/snapshots" 2>&1) ||
			fail "the second mount: ls snapshots/: $got"
		! grep -q -e '^\.' -e tmp <<<"$got" ||
			fail "the second mount shows a temporary file ($1): $got"
		[ "$got" != gen1 ] || return 0
		sleep 0.05 # a finished k$i just removed: let the view catch up
	done
	assert_eq gen1 "$got" "snapshots/ of the second mount ($1)"
}
midsave=0
completed=0
for i in $(seq 1 "$CRASH_ROUNDS"); do
	ckpt_mount "$STORE" "$MNT" "source=$RUN"
	check_mount_fresh
	pid=$DAEMON_PID
	conn=$(awk -v m="$MNT" '$5 == m { print $3 }' /proc/self/mountinfo)
	(timeout -k 2 30 mkdir "$MNT/snapshots/k$i" >/dev/null 2>&1 || true) &
	mk=$!
	track_pid "$mk"
	if [ $((i % 5)) -eq 1 ]; then
		# Early: maybe before the temporary file exists.
		sleep "0.0$((i % 10))"
	else
		wait_for 10 has_tmp "k$i" ||
			fail "save k$i: no temporary file in STORE within 10 s"
		sleep "$(awk -v i="$i" 'BEGIN { printf "%.2f", (i % 7) * 0.06 }')"
	fi
	# A save that already published its checkpoint is not mid-save.
	if [ -n "$(leftovers)" ] && [ ! -e "$STORE/k$i.ckpt" ]; then
		midsave=$((midsave + 1))
		view_ok "while save k$i writes $(leftovers | tr '\n' ' ')"
		# While it runs, the status file says so.
		timeout 5 cat "$MNT/.ckptfs/status" >"$WORK/status" ||
			fail "cannot read .ckptfs/status during save k$i"
		python3 - "$WORK/status" "k$i" <<'EOF' ||
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
mine = [o for o in lines if o.get("save") == sys.argv[2]]
assert mine, "no status line for the save in progress"
o = mine[-1]
assert o["result"] in ("running", "ok"), o
for k in "files_done", "files_total", "bytes_done", "bytes_total":
    assert isinstance(o[k], (int, float)), (k, o)
assert o["files_done"] <= o["files_total"], o
EOF
			fail "status during save k$i: $(cat "$WORK/status")"
	fi
	kill -KILL "$pid"
	if ! wait_for 5 all_gone "$pid"; then
		# Not reapable: lib.sh must not wait for it.  Abort our
		# connection where fusectl is mounted, so nothing stays behind.
		_untrack "$pid"
		why=$(stuck "$pid")
		abort=/sys/fs/fuse/connections/${conn#*:}/abort
		if [ -w "$abort" ]; then
			echo 1 >"$abort"
		else
			note "left behind: mkdir k$i and PID $pid, until" \
				"'echo 1 >$abort' (mount -t fusectl first)"
		fi
		fail "kill -9 $i: a thread of the daemon (PID $pid) survives in" \
			"the kernel ($why); the mount and mkdir k$i are wedged" \
			"until the FUSE connection is aborted"
	fi
	wait "$pid" 2>/dev/null || true
	_untrack "$pid"
	fusermount3 -u -z "$MNT" 2>/dev/null || true
	_unmnt "$MNT"
	wait_for 10 pid_gone "$mk" || fail "mkdir k$i still blocked after the kill"
	wait "$mk" 2>/dev/null || true
	_untrack "$mk"
	rc=0
	check_store_after_kill "k$i" || rc=$?
	[ "$rc" -eq 2 ] || view_ok "after the kill of save k$i"
	if [ "$rc" -eq 2 ]; then
		# The save finished before the kill: then it is whole.
		completed=$((completed + 1))
		note "save k$i completed before SIGKILL"
		ckpt_mount "$STORE" "$MNT"
		out=$(timeout 20 diff -r "$RUN/world" "$MNT/snapshots/k$i/world" 2>&1) ||
			fail "k$i, completed before the kill, reads wrong: $out"
		cmp -s "$RUN/workspace/big/r6.bin" \
			"$MNT/snapshots/k$i/workspace/big/r6.bin" ||
			fail "k$i, completed before the kill: r6.bin differs"
		ckpt_umount "$MNT"
		rm "$STORE/k$i.ckpt" "$STORE/checkpoint.json"
	fi
done
note "$midsave of $CRASH_ROUNDS kills hit a save with its temporary file" \
	"present; $completed saves completed first"
[ "$midsave" -ge $((CRASH_ROUNDS / 2)) ] ||
	fail "only $midsave of $CRASH_ROUNDS kills came while a temporary file existed"
ckpt_mount "$STORE" "$MNT" "source=$RUN"
check_mount_fresh
if grep -q '"result":"running"' "$MNT/.ckptfs/status"; then
	fail "status shows a save running after a crash and remount"
fi
ckpt_umount "$MNT"
view_ok "at the end"
ckpt_umount "$VIEW"
rm -rf "$RUN/workspace/big"

# ---- ENOSPC --------------------------------------------------------------------------
[ -n "$HAVE_TMPFS" ] ||
	skip "the crash half passed; the full-disk half needs root to mount a tmpfs"
RUN2=$WORK/run2
mkdir -p "$RUN2/world" "$RUN2/workspace/src"
echo '{"world": 2}' >"$RUN2/world/w.json"
printf 'int main(void) { return 0; }\n' >"$RUN2/workspace/src/main.c"
head -c $((512 << 10)) /dev/urandom >"$RUN2/workspace/small.bin"
STORE2=$SMALL/store
mkdir -p "$STORE2"
ckpt_mount "$STORE2" "$MNT" "source=$RUN2"
timeout 20 mkdir "$MNT/snapshots/ok1" || fail "the first save on the tmpfs"
head -c $((10 << 20)) /dev/urandom >"$RUN2/workspace/big.bin"
before=$(ls -A "$STORE2"; cat "$STORE2/checkpoint.json")
assert_errno "No space left on device" mkdir "$MNT/snapshots/full"
assert_eq "$before" "$(ls -A "$STORE2"; cat "$STORE2/checkpoint.json")" \
	"STORE after ENOSPC (no NAME.ckpt, no temporary file)"
code=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["code"])' \
	<(timeout 5 cat "$MNT/.ckptfs/errors/full")) ||
	fail "no readable errors/full after ENOSPC"
assert_eq no_space "$code" "code in errors/full"
avail=$(df -k --output=avail "$SMALL" | tail -n 1)
[ "$avail" -ge 2048 ] ||
	fail "the failed save left space in use: $avail KiB free of 4096"
out=$(timeout 20 diff -r "$RUN2/world" "$MNT/snapshots/ok1/world" 2>&1) ||
	fail "ok1 after ENOSPC: $out"
cmp -s "$RUN2/workspace/small.bin" "$MNT/snapshots/ok1/workspace/small.bin" ||
	fail "ok1/workspace/small.bin after ENOSPC"
assert_eq ok1 "$(ls -A "$MNT/snapshots")" "snapshots/ after ENOSPC"
rm "$RUN2/workspace/big.bin"
timeout 20 mkdir "$MNT/snapshots/ok2" ||
	fail "a small save after ENOSPC: $(cat "$MNT/.ckptfs/errors/ok2" 2>&1)"
out=$(timeout 20 diff -r "$RUN2/workspace" "$MNT/snapshots/ok2/workspace" 2>&1) ||
	fail "ok2 after ENOSPC: $out"
assert_eq "checkpoint.json
ok1.ckpt
ok2.ckpt" "$(ls -A "$STORE2")" "STORE after the save that followed ENOSPC"
daemon_alive
ckpt_umount "$MNT"
exit 0
