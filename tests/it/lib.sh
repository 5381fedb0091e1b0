# shellcheck shell=bash
# tests/it/lib.sh - sourced by every integration test (tests/it/NN-*.sh).
#
# Owns the test's scratch directory and every ckptfs daemon it starts.  The
# invariant: whatever way the test ends (pass, fail, ^C), every mount it made
# is unmounted, every PID it started is ended (TERM, then KILL after 5 s),
# and $WORK is removed; nothing is ever written under $SRCDIR.  Every wait is
# bounded.  Exit status: 0 pass, 1 fail, 77 skip.
#
# Environment (set by `make check`; defaults for a direct run from the tree):
#   SRCDIR  the source tree;  CKPTFS  the daemon;  MKCKPT  the fixture maker.

# The tests use bash (arrays, [[ ]], process substitution): if a plain sh
# sources this (SH_LOG_COMPILER=$(SHELL) may be /bin/sh), rerun in bash.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -eu
export LC_ALL=C TZ=UTC

: "${SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${CKPTFS:=$SRCDIR/fs/ckptfs}"
: "${MKCKPT:=$SRCDIR/tests/mkckpt}"
export SRCDIR CKPTFS MKCKPT

TEST_NAME=$(basename "$0" .sh)

_MNTS=()              # mountpoints we mounted and have not unmounted
_PIDS=()              # PIDs we started and have not reaped
declare -A _MNT_PID   # mountpoint -> daemon PID
declare -A _MNT_LOG   # mountpoint -> daemon log
_NDAEMON=0
DAEMON_PID=           # of the last ckpt_mount
DAEMON_LOG=

skip() { echo "SKIP: $TEST_NAME: $*" >&2; exit 77; }
fail() {
	local m
	echo "FAIL: $TEST_NAME: $*" >&2
	for m in "${!_MNT_PID[@]}"; do
		pid_alive "${_MNT_PID[$m]}" ||
			echo "# ckptfs on $m (PID ${_MNT_PID[$m]}) has died" >&2
	done
	exit 1
}
note() { echo "# $*" >&2; }

[ -c /dev/fuse ] || skip "no /dev/fuse on this machine"
command -v fusermount3 >/dev/null 2>&1 ||
	skip "fusermount3 not found (Debian package fuse3)"
[ -x "$CKPTFS" ] || fail "CKPTFS=$CKPTFS is not an executable (build first)"
[ -x "$MKCKPT" ] || fail "MKCKPT=$MKCKPT is not an executable (build first)"

# need CMD PACKAGE: skip the whole test, loudly, when a tool is missing.
need() {
	command -v "$1" >/dev/null 2>&1 || skip "$1 not found (Debian package $2)"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-it.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)

_CONNS=() # FUSE connection numbers of our mounts

# A daemon with a thread stuck in the kernel is never reaped: abort its
# FUSE connection (fusectl), so a broken daemon fails a test instead of
# hanging it.
_abort_conns() {
	local c d=/sys/fs/fuse/connections
	mountpoint -q "$d" || mount -t fusectl none "$d" 2>/dev/null
	for c in "${_CONNS[@]}"; do
		[ -n "$c" ] && [ -w "$d/$c/abort" ] && echo 1 >"$d/$c/abort"
	done
}

_cleanup() {
	local rc=$? m p i alive
	set +e
	trap - EXIT INT TERM
	for m in "${_MNTS[@]}"; do
		fusermount3 -u -z "$m" >/dev/null 2>&1
	done
	for p in "${_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for ((i = 0; i < 100; i++)); do
		alive=
		for p in "${_PIDS[@]}"; do
			pid_alive "$p" && alive=1
		done
		[ -n "$alive" ] || break
		sleep 0.05
	done
	for p in "${_PIDS[@]}"; do
		if pid_alive "$p"; then
			echo "# PID $p ignored SIGTERM for 5 s; sending SIGKILL" >&2
			kill -KILL "$p" 2>/dev/null
		fi
		for ((i = 0; i < 100; i++)); do
			[ -d "/proc/$p/task" ] && [ -n "$(ls "/proc/$p/task" 2>/dev/null | \
				grep -v "^$p\$")" ] || break
			sleep 0.05
		done
		if [ -n "$(ls "/proc/$p/task" 2>/dev/null | grep -v "^$p\$")" ]; then
			echo "# PID $p is wedged in the kernel; aborting its FUSE connection" >&2
			_abort_conns
			[ "$rc" -eq 0 ] && rc=1
		fi
		wait "$p" 2>/dev/null
	done
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		for p in "$WORK"/daemon.*.log; do
			[ -s "$p" ] || continue
			if [ "$(wc -l <"$p")" -le 200 ]; then
				echo "--- $p" >&2
				cat "$p" >&2
			else
				echo "--- $p (first 120 and last 40 lines)" >&2
				head -n 120 "$p" >&2
				echo "[...]" >&2
				tail -n 40 "$p" >&2
			fi
		done
	fi
	# Copies of read-only trees have 0555 dirs; -xdev keeps off any mount.
	find "$WORK" -xdev -type d ! -perm -u+w -exec chmod u+w {} + 2>/dev/null
	rm -rf --one-file-system "$WORK"
	exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# pid_alive PID: true while PID runs (a zombie counts as gone).
pid_alive() {
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	s=${s##*) }
	[ "${s%% *}" != Z ]
}

# track_pid PID: a helper process the cleanup must end too.
pid_gone() { ! pid_alive "$1"; }
track_pid() { _PIDS+=("$1"); }

_untrack() {
	local p keep=()
	for p in "${_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	_PIDS=("${keep[@]}")
}

_unmnt() {
	local m keep=()
	for m in "${_MNTS[@]}"; do
		[ "$m" = "$1" ] || keep+=("$m")
	done
	_MNTS=("${keep[@]}")
	unset "_MNT_PID[$1]" "_MNT_LOG[$1]"
}

# is_mounted MNT: read from /proc, so it never blocks on a sick daemon.
is_mounted() {
	awk -v m="$1" '$2 == m && $3 ~ /^fuse/ { f = 1 } END { exit !f }' \
		/proc/self/mounts
}

_show_log() {
	echo "--- $1" >&2
	cat "$1" >&2 || true
}

# ckpt_mount STORE MNT [OPTS]: start the daemon in the foreground, in the
# background, and wait <= 10 s for the mount.  Sets DAEMON_PID, DAEMON_LOG.
ckpt_mount() {
	local store=$1 mnt=$2 opts=${3-} log pid i rc=0
	mkdir -p "$mnt"
	mnt=$(cd "$mnt" && pwd -P)
	is_mounted "$mnt" && fail "ckpt_mount: $mnt is already mounted"
	_NDAEMON=$((_NDAEMON + 1))
	log=$WORK/daemon.$_NDAEMON.log
	if [ -n "$opts" ]; then
		"$CKPTFS" "$store" "$mnt" -f -o "$opts" </dev/null >"$log" 2>&1 &
	else
		"$CKPTFS" "$store" "$mnt" -f </dev/null >"$log" 2>&1 &
	fi
	pid=$!
	_PIDS+=("$pid")
	_MNTS+=("$mnt")
	_MNT_PID[$mnt]=$pid
	_MNT_LOG[$mnt]=$log
	DAEMON_PID=$pid
	# shellcheck disable=SC2034 # for the tests that source this file
	DAEMON_LOG=$log
	for ((i = 0; i < 200; i++)); do
		if is_mounted "$mnt"; then
			# The FUSE connection's number, to abort it if the
			# daemon ever wedges in the kernel (see _cleanup).
			_CONNS+=("$(stat -c %d "$mnt" 2>/dev/null)")
			return 0
		fi
		if ! pid_alive "$pid"; then
			wait "$pid" || rc=$?
			_untrack "$pid"
			_unmnt "$mnt"
			_show_log "$log"
			fail "ckptfs $store $mnt${opts:+ -o $opts} exited" \
				"with status $rc before mounting"
		fi
		sleep 0.05
	done
	_show_log "$log"
	fail "ckptfs did not mount $mnt within 10 s"
}

# ckpt_umount MNT: unmount, wait <= 10 s for the daemon to exit, require
# exit status 0 and a clean log.
ckpt_umount() {
	local mnt pid log out
	mnt=$(cd "$1" && pwd -P)
	pid=${_MNT_PID[$mnt]-}
	log=${_MNT_LOG[$mnt]-}
	[ -n "$pid" ] || fail "ckpt_umount: $mnt was not mounted by this test"
	out=$(fusermount3 -u "$mnt" 2>&1) || fail "fusermount3 -u $mnt: $out"
	_unmnt "$mnt"
	daemon_exits "$pid" "$log" 10 "after unmounting $mnt"
}

# daemon_exits PID LOG SECS WHEN: the daemon PID (started by this test) must
# end within SECS seconds, with status 0 and a clean LOG; WHEN ends the
# failure messages ("after ...").
daemon_exits() {
	local pid=$1 log=$2 secs=$3 when=$4 rc=0
	if ! wait_for "$secs" pid_gone "$pid"; then
		_show_log "$log"
		fail "ckptfs (PID $pid) still runs $secs s $when"
	fi
	wait "$pid" || rc=$?
	_untrack "$pid" # reaped: its number may be reused
	if [ "$rc" -ne 0 ]; then
		_show_log "$log"
		fail "ckptfs exited with status $rc $when"
	fi
	check_log "$log"
}

# check_log [LOG...]: fail if a daemon log (default: all of this test's)
# shows a sanitizer report or an error.
check_log() {
	local f
	[ $# -gt 0 ] || set -- "$WORK"/daemon.*.log
	for f; do
		[ -f "$f" ] || continue
		if grep -nE 'AddressSanitizer|LeakSanitizer|runtime error:|ERROR' \
			"$f" >&2; then
			fail "daemon log $f reports the errors above"
		fi
	done
}

# daemon_alive: the last daemon still runs and its mount still answers.
daemon_alive() {
	pid_alive "$DAEMON_PID" || fail "ckptfs (PID $DAEMON_PID) died"
}

# assert_eq EXPECTED ACTUAL [WHAT]
assert_eq() {
	[ "$1" = "$2" ] && return 0
	echo "--- expected / +++ actual: ${3:-value}" >&2
	diff -u <(printf '%s\n' "$1") <(printf '%s\n' "$2") | tail -n +3 >&2 ||
		true
	fail "${3:-value} differs from the expected value"
}

_errno_text() {
	case $1 in
	EROFS) echo "Read-only file system" ;;
	EPERM) echo "Operation not permitted" ;;
	EACCES) echo "Permission denied" ;;
	ENOENT) echo "No such file or directory" ;;
	EIO) echo "Input/output error" ;;
	EEXIST) echo "File exists" ;;
	EINVAL) echo "Invalid argument" ;;
	ENOTDIR) echo "Not a directory" ;;
	EISDIR) echo "Is a directory" ;;
	EXDEV) echo "Invalid cross-device link" ;;
	ENAMETOOLONG) echo "File name too long" ;;
	*) echo "$1" ;;
	esac
}

# assert_errno ERRNO CMD [ARG...]: CMD (an executable, run under a 10 s
# timeout) must fail, and its output must carry strerror(ERRNO).  ERRNO is a
# name (EROFS, EPERM, ENOENT, EIO, ...) or a literal message.
assert_errno() {
	local want msg out rc=0
	want=$1
	shift
	msg=$(_errno_text "$want")
	out=$(timeout -k 2 10 "$@" 2>&1 </dev/null) || rc=$?
	[ "$rc" -ne 0 ] || fail "'$*' succeeded; expected $want"
	case $rc in 124 | 137) fail "'$*' timed out" ;; esac
	case $out in
	*"$msg"*) ;;
	*) fail "'$*': expected $want ($msg); got status $rc: $out" ;;
	esac
}

# wait_for SECONDS CMD [ARG...]: poll every 50 ms until CMD succeeds;
# status 1 when SECONDS pass first.  An executable CMD runs under timeout.
wait_for() {
	local n i
	n=$(awk -v s="$1" 'BEGIN { printf "%d", s * 20 }')
	shift
	for ((i = 0; i <= n; i++)); do
		if declare -F "$1" >/dev/null; then
			"$@" && return 0
		else
			timeout -k 1 5 "$@" >/dev/null 2>&1 && return 0
		fi
		[ "$i" -lt "$n" ] && sleep 0.05
	done
	return 1
}

# tree_listing DIR: "path type mode" for everything under DIR, sorted;
# file modes masked as ckptfs serves them (& 0555), dirs 555, links 777.
tree_listing() {
	local t m p
	find "$1" -mindepth 1 -printf '%y %m %P\n' |
		while read -r t m p; do
			case $t in
			d) m=555 ;;
			l) m=777 ;;
			*) m=$(printf '%o' $((8#$m & 8#555))) ;;
			esac
			printf '%s %s %s\n' "$p" "$t" "$m"
		done | LC_ALL=C sort
}

# mkckpt RUNDIR OUT [mkckpt options]: the fixture maker, with a clear error.
mkckpt() {
	local run=$1 out=$2 err
	shift 2
	err=$("$MKCKPT" "$@" "$run" "$out" 2>&1) ||
		fail "mkckpt $* $run $out: $err"
}

# make_run DIR [SEED]: a realistic run directory (world, workspace, session).
make_run() {
	local d=$1 seed=${2-0} w
	w=$d/workspace
	mkdir -p "$d/world" "$w/src" "$w/bin" "$w/empty" "$w/docs/deep/er" \
		"$w/data" "$d/session/projects/p1"
	printf '{"world": "demo", "seed": %s, "step": 120, "state": {"x": 1}}\n' \
		"$seed" >"$d/world/snapshot.json"
	printf '#!/bin/sh\n# run %s\nexec echo "run $*"\n' "$seed" \
		>"$w/src/run.sh"
	chmod 0755 "$w/src/run.sh"
	printf '#include <stdio.h>\nint main(void) { return %s; }\n' "$seed" \
		>"$w/src/main.c"
	chmod 0644 "$w/src/main.c"
	printf 'private notes %s\n' "$seed" >"$w/src/private.txt"
	chmod 0600 "$w/src/private.txt"
	printf 'read only %s\n' "$seed" >"$w/docs/readonly.txt"
	chmod 0444 "$w/docs/readonly.txt"
	ln -s ../src/run.sh "$w/bin/run"
	ln -s docs "$w/docs-link"
	printf '# Demo run %s\n\nA workspace with a README.\n' "$seed" \
		>"$w/README.md"
	printf '*.o\n' >"$w/.gitignore"
	: >"$w/empty.txt"
	printf 'spaces and UTF-8 %s\n' "$seed" \
		>"$w/docs/"$'notes with spaces \303\251\303\274 \346\227\245\346\234\254.txt'
	printf 'deep %s\n' "$seed" >"$w/docs/deep/er/leaf.txt"
	yes "the quick brown fox $seed jumps over the lazy dog 0123456789" |
		head -c 1048576 >"$w/data/compressible.txt"
	head -c 1048576 /dev/urandom >"$w/data/random.bin"
	{
		printf '{"type":"user","message":"hello %s"}\n' "$seed"
		printf '{"type":"assistant","message":"hi"}\n'
		printf '{"type":"user","message":"bye"}\n'
	} >"$d/session/projects/p1/abc.jsonl"
	# Times with nanoseconds, the edges of the nanosecond field included.
	touch -d '@1763802000.123456789' "$w/src/main.c"
	touch -d '@1000000000.000000001' "$w/docs/readonly.txt"
	touch -d '@1763802001.999999999' "$w/empty.txt"
	touch -h -d '@1763802002.5' "$w/bin/run"
	touch -d '@1763802003.000000000' "$w/empty"
}

# ---- the daemon's memory ---------------------------------------------------

# Tests that bound the daemon's memory hold it under this.
RSS_LIMIT_KB=$((256 * 1024))

# AddressSanitizer keeps 256 MiB of freed memory in quarantine by default,
# which would count against the daemon; 16 MiB still catches use after free
# in these short runs.  Call before ckpt_mount.
asan_small_quarantine() {
	export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=16
}

# daemon_hwm: the mounted daemon's peak RSS so far (VmHWM), in kB.
daemon_hwm() {
	awk '$1 == "VmHWM:" { print $2 }' "/proc/$DAEMON_PID/status" 2>/dev/null
}

# _rss_sampler PID OUT: appends each new highest VmRSS/VmHWM of PID, in kB,
# to OUT until killed (one write each, so a kill never leaves half a line).
_rss_sampler() {
	local pid=$1 out=$2 peak=0 k v _
	while [ -r "/proc/$pid/status" ]; do
		while read -r k v _; do
			case $k in
			VmRSS: | VmHWM:)
				if [ "$v" -gt "$peak" ]; then
					peak=$v
					echo "$peak" >>"$out"
				fi
				;;
			esac
		done <"/proc/$pid/status" 2>/dev/null || true
		sleep 0.05
	done
}

# rss_watch: samples the mounted daemon's RSS every 50 ms from now on.
rss_watch() {
	_rss_sampler "$DAEMON_PID" "$WORK/rss.$DAEMON_PID" &
	SAMPLER=$!
	track_pid "$SAMPLER"
}

# rss_check [LABEL]: stops the sampling; fails unless the daemon is alive
# and its peak RSS (sampled, and VmHWM) stayed under RSS_LIMIT_KB.
rss_check() {
	local hwm sampled peak
	hwm=$(daemon_hwm)
	[ -n "$hwm" ] || fail "ckptfs (PID $DAEMON_PID) is gone"
	kill "$SAMPLER" 2>/dev/null
	wait "$SAMPLER" 2>/dev/null || true
	sampled=$(sort -n "$WORK/rss.$DAEMON_PID" 2>/dev/null | tail -n 1)
	[ -n "$sampled" ] || fail "the sampler never read the daemon's RSS"
	peak=$((hwm > sampled ? hwm : sampled))
	note "daemon peak RSS${1:+ ($1)}: $peak kB (sampled every 50 ms:" \
		"$sampled kB; VmHWM $hwm kB)"
	[ "$peak" -lt "$RSS_LIMIT_KB" ] ||
		fail "daemon RSS reached $peak kB${1:+ ($1)}" \
			"(limit $RSS_LIMIT_KB kB)"
}
