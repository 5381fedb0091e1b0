#!/bin/bash
# 70-stress.sh - readers and every kind of store change, all at once.
#
# On one mount, three writers run a fixed number of rounds each while five
# readers loop until the writers are done:
#   saves    mkdir snapshots/svI; every second one renamed (mv) to mvI;
#            every third round deletes (rmdir) the previous round's;
#   outside  cp into STORE under a temporary name, then mv to xI.ckpt (as
#            rsync does); once shown, mv snapshots/xI snapshots/yI; every
#            odd one then rmdir'ed;
#   copies   a plain, non-atomic cp to pI.ckpt and an rsync to rI.ckpt;
#            every even round removes (rm) the previous round's two;
#   readers  find over the mount; cat of every file of a checkpoint nobody
#            touches (exact checksum); grep -r over snapshots/; rsync of an
#            untouched checkpoint (exact copy) and of all of snapshots/;
#            cat of the big file of every checkpoint listed (exact bytes).
# Every write must succeed.  A reader may meet a checkpoint removed or
# renamed under it (ENOENT, ESTALE, rsync's "vanished"); anything else
# (EIO, wrong bytes, a missing untouched checkpoint) is an error.  Then
# snapshots/ and STORE hold exactly the expected checkpoints and nothing
# else, latest is the newest save, and every checkpoint in STORE passes
# unzip -t, has every file's xxh3_128 (xxhsum -H2) and size as its
# manifest says, and reads through the mount as unzip extracts it.  The
# daemon's log shows no error, only the refusals of partly copied pI.ckpt,
# and it exits cleanly.  Counts and the daemon's peak RSS are printed.
#
# Small here; scripts/stress runs the same scenario long, or under
# valgrind, through these variables:
#   STRESS_ROUNDS rounds of each writer (10);  STRESS_FILES small files in
#   the saved run (100);  STRESS_MB MiB of its big file (2);  STRESS_SLOW
#   multiplies every time bound (1);  STRESS_EXIT_WAIT seconds the daemon
#   may take to exit after unmounting (10).
# shellcheck disable=SC2016 # sh -c scripts take their arguments as $1...
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need rsync rsync
need unzip unzip
need xxhsum xxhash
need python3 python3
# A pyenv shim costs 0.1 s a call: call the interpreter it resolves to.
PY3=$(python3 -c 'import sys; print(sys.executable)')
python3() { "$PY3" "$@"; }
: "${CKPTFS_BACKENDS:=$SRCDIR/backends}"
export CKPTFS_BACKENDS
: "${STRESS_ROUNDS:=10}" "${STRESS_FILES:=100}" "${STRESS_MB:=2}"
: "${STRESS_SLOW:=1}" "${STRESS_EXIT_WAIT:=10}"
N=$STRESS_ROUNDS
# T SECONDS: a time bound, stretched for slow runs (valgrind).
T() { echo $(($1 * STRESS_SLOW)); }

STORE=$WORK/store
MNT=$WORK/mnt
S=$MNT/snapshots
mkdir -p "$STORE"
# big_run DIR SEED: make_run plus STRESS_FILES small files and a big one,
# half random (stored) and half text (deflated).
big_run() {
	local d=$1 i
	make_run "$d" "$2"
	mkdir -p "$d/workspace/many"
	for ((i = 0; i < STRESS_FILES; i++)); do
		[ $((i % 50)) -eq 0 ] && mkdir -p "$d/workspace/many/d$((i / 50))"
		printf 'file %d of run %s: the quick brown fox\n' "$i" "$2" \
			>"$d/workspace/many/d$((i / 50))/f$i.txt"
	done
	{
		head -c $((STRESS_MB << 19)) /dev/urandom
		yes "big file of run $2, line after line" |
			head -c $((STRESS_MB << 19))
	} >"$d/workspace/data/big.bin"
}
OLD=$(($(date -u -d 2026-01-01T00:00:00Z +%s) * 1000000000))
big_run "$WORK/run" 1 # what the saves save
big_run "$WORK/rb" 2  # base.ckpt, the copies' original
big_run "$WORK/r1" 3
big_run "$WORK/r2" 4
mkckpt "$WORK/rb" "$WORK/base.ckpt" -n base -c "$OLD"
mkckpt "$WORK/r1" "$STORE/s1.ckpt" -n s1 -c "$OLD"
mkckpt "$WORK/r2" "$STORE/s2.ckpt" -n s2 -c "$OLD"

# allsum DIR: checksum of every tier file under DIR, in sorted path order.
allsum() {
	timeout -k 2 "$(T 60)" sh -c 'cd "$1" && find world workspace -type f \
		-print0 | sort -z | xargs -0 cat | cksum' sh "$1"
}
SUM1=$(allsum "$WORK/r1")

# ---- workers ---------------------------------------------------------------------
# Each appends one line per operation to $WORK/ev.NAME: "ok", "tol" (a
# reader met a checkpoint removed under it) or "err WHAT".
# What a reader may meet: ENOENT and ESTALE from a checkpoint gone, and
# rsync's words for them, each error on its own line; then rsync's summary.
ALLOWED='No such file or directory|Stale file handle|(file|directory) has vanished'
ALLOWED+='|^rsync (warning: some files vanished before|error: some files/attrs were not transferred|error: error in file IO)'
ev() { echo "$2" >>"$WORK/ev.$1"; }

# op W CMD...: one write, which must succeed.
op() {
	local w=$1 out rc=0
	shift
	out=$(timeout -k 2 "$(T 30)" "$@" 2>&1) || rc=$?
	if [ "$rc" -eq 0 ]; then
		ev "$w" ok
	else
		ev "$w" "err $* (status $rc): $out"
	fi
	return "$rc"
}

# rd [-x] W CMD...: one read (CMD bounded by a timeout, or a function that
# bounds itself), output in $WORK/out.W; status 0 done, 1 met a
# removed checkpoint only (tol), 2 error (recorded).  With -x (a
# checkpoint nobody touches) nothing is tolerated.
rd() {
	local w x='' rc=0
	[ "$1" != -x ] || x=1
	[ -z "$x" ] || shift
	w=$1
	shift
	if declare -F "$1" >/dev/null; then
		"$@" >"$WORK/out.$w" 2>"$WORK/err.$w" || rc=$?
	else
		timeout -k 2 "$(T 60)" "$@" >"$WORK/out.$w" 2>"$WORK/err.$w" ||
			rc=$?
	fi
	if [ "$rc" -eq 0 ] && [ ! -s "$WORK/err.$w" ]; then
		return 0
	fi
	if [ -z "$x" ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] &&
		[ -s "$WORK/err.$w" ] &&
		! grep -qvE "$ALLOWED" "$WORK/err.$w"; then
		ev "$w" "tol $(head -c 300 "$WORK/err.$w" | tr "\n" " ")"
		return 1
	fi
	ev "$w" "err $* (status $rc): $(head -c 600 "$WORK/err.$w" | tr '\n' '|')"
	return 2
}

# name I: what save I is called after its writer renamed it or not.
name() { if [ $(($1 % 2)) -eq 0 ]; then echo "mv$1"; else echo "sv$1"; fi; }

w_saves() {
	local i
	for ((i = 1; i <= N; i++)); do
		op saves mkdir "$S/sv$i" || continue
		[ $((i % 2)) -eq 0 ] && op saves mv -T "$S/sv$i" "$S/mv$i"
		[ $((i % 3)) -eq 0 ] && op saves rmdir "$S/$(name $((i - 1)))"
	done
}

shown() { [ -d "$S/$1" ]; }
w_outside() {
	local i
	for ((i = 1; i <= N; i++)); do
		op outside cp "$WORK/base.ckpt" "$STORE/.x$i.tmp" &&
			op outside mv "$STORE/.x$i.tmp" "$STORE/x$i.ckpt" || continue
		if ! wait_for "$(T 5)" shown "x$i"; then
			ev outside "err x$i.ckpt not shown within $(T 5) s"
			continue
		fi
		op outside mv -T "$S/x$i" "$S/y$i" || continue
		[ $((i % 2)) -eq 1 ] && op outside rmdir "$S/y$i"
	done
}

w_copies() {
	local i
	for ((i = 1; i <= N; i++)); do
		op copies cp "$WORK/base.ckpt" "$STORE/p$i.ckpt"
		op copies rsync "$WORK/base.ckpt" "$STORE/r$i.ckpt"
		[ $((i % 2)) -eq 0 ] &&
			op copies rm "$STORE/p$((i - 1)).ckpt" "$STORE/r$((i - 1)).ckpt"
		sleep 0.1
	done
}

# Readers loop until $WORK/stop exists, at least once.
loop() {
	local f=$1
	while :; do
		"$f"
		ev "$f" iter
		[ ! -e "$WORK/stop" ] || break
	done
}
r_find() {
	local l
	rd r_find find "$MNT" && ev r_find ok
	l=$(timeout "$(T 30)" ls "$S" 2>&1) || true
	grep -qx s1 <<<"$l" && grep -qx s2 <<<"$l" ||
		ev r_find "err untouched checkpoints missing from snapshots/: $l"
}
r_cat() {
	local got
	rd -x r_cat allsum "$S/s1" || return 0
	got=$(cat "$WORK/out.r_cat")
	if [ "$got" = "$SUM1" ]; then
		ev r_cat ok
	else
		ev r_cat "err s1 reads as $got, not $SUM1"
	fi
}
r_grep() {
	rd r_grep grep -r -l 'quick brown fox' "$S" && ev r_grep ok
}
r_rsync() {
	local out
	if rd -x r_rsync rsync -a --delete "$S/s2/" "$WORK/rs2/"; then
		out=$(diff -r --no-dereference "$WORK/r2/workspace" \
			"$WORK/rs2/workspace" 2>&1) ||
			ev r_rsync "err rsync of s2 differs: $out"
	fi
	rd r_rsync rsync -a --delete "$S/" "$WORK/rsall/" && ev r_rsync ok
}
r_big() {
	local n want x
	for n in $(timeout "$(T 30)" ls "$S" 2>/dev/null); do
		x=()
		case $n in
		sv* | mv*) want=$WORK/run ;;
		s1) want=$WORK/r1 x=(-x) ;;
		s2) want=$WORK/r2 x=(-x) ;;
		*) want=$WORK/rb ;;
		esac
		rd "${x[@]}" r_big cat "$S/$n/workspace/data/big.bin" || continue
		if cmp -s "$WORK/out.r_big" "$want/workspace/data/big.bin"; then
			ev r_big ok
		else
			ev r_big "err $n/workspace/data/big.bin: wrong bytes"
		fi
	done
}

ckpt_mount "$STORE" "$MNT" "source=$WORK/run"
started=$EPOCHREALTIME
WORKERS=()
for w in w_saves w_outside w_copies; do
	(
		set +e
		"$w"
	) &
	WORKERS+=($!)
	track_pid $!
done
READERS=()
for r in r_find r_cat r_grep r_rsync r_big; do
	(
		set +e
		loop "$r"
	) &
	READERS+=($!)
	track_pid $!
done
for p in "${WORKERS[@]}"; do
	wait_for "$(T $((N * 20 + 30)))" pid_gone "$p" ||
		fail "a writer still runs after $(T $((N * 20 + 30))) s"
	wait "$p" || true
	_untrack "$p"
done
: >"$WORK/stop"
for p in "${READERS[@]}"; do
	wait_for "$(T 120)" pid_gone "$p" || fail "a reader still runs $(T 120) s after the writers"
	wait "$p" || true
	_untrack "$p"
done
secs=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
daemon_alive

# ---- counts -----------------------------------------------------------------------
# tally PATTERN FILE...: lines matching PATTERN in the event files.
tally() {
	local p=$1
	shift
	cat "$@" 2>/dev/null | grep -c "$p" || true
}
W=("$WORK"/ev.saves "$WORK"/ev.outside "$WORK"/ev.copies)
R=("$WORK"/ev.r_*)
errs=$(tally '^err' "$WORK"/ev.*)
note "stress: $N rounds in $secs s; writes: $(tally '^ok$' "${W[@]}") done" \
	"(saves $(tally . "$WORK/ev.saves"), outside $(tally . "$WORK/ev.outside")," \
	"copies $(tally . "$WORK/ev.copies")); reads: $(tally '^ok$' "${R[@]}") done" \
	"in $(tally '^iter$' "${R[@]}") reader loops, $(tally '^tol' "${R[@]}")" \
	"met a checkpoint removed under them; errors: $errs"
if [ "$errs" -gt 0 ]; then
	grep -h '^err' "$WORK"/ev.* | head -n 20 >&2
	fail "$errs operations failed (above)"
fi
for r in r_find r_cat r_grep r_rsync r_big; do
	grep -qx iter "$WORK/ev.$r" || fail "reader $r never ran"
done

# ---- what is left -----------------------------------------------------------------
want="s1 s2"
for ((i = 1; i <= N; i++)); do
	[ $(((i + 1) % 3)) -eq 0 ] && [ $((i + 1)) -le "$N" ] ||
		want="$want $(name "$i")"
	[ $((i % 2)) -eq 0 ] && want="$want y$i"
	[ $((i % 2)) -eq 0 ] || [ "$i" -eq "$N" ] && want="$want p$i r$i"
done
want=$(tr ' ' '\n' <<<"$want" | sort | tr '\n' ' ')
listing() { timeout "$(T 30)" ls "$S" 2>/dev/null | tr '\n' ' '; }
settled() { [ "$(listing)" = "$want" ]; }
wait_for "$(T 5)" settled || assert_eq "$want" "$(listing)" "snapshots/ at the end"
# shellcheck disable=SC2086 # $want is a list of names
assert_eq "$( (printf '%s.ckpt\n' $want; echo checkpoint.json) | sort)" \
	"$(ls -A "$STORE" | sort)" "STORE at the end (no temporary file left)"
for ((i = N; i >= 1; i--)); do
	case " $want " in *" $(name "$i") "*) break ;; esac
done
assert_eq "snapshots/$(name "$i")" "$(readlink "$MNT/latest")" \
	"latest (the newest save left)"
status=$(timeout "$(T 30)" cat "$MNT/.ckptfs/status") || fail "cannot read the status file"
refused=$(grep '"refused"' <<<"$status" || true)
[ -z "$refused" ] || fail "the status file still refuses: $refused"

# ---- every checkpoint against its manifest ---------------------------------------
cat >"$WORK/verify.py" <<'EOF'
import json, os, subprocess, sys
root = sys.argv[1]
m = json.load(open(os.path.join(root, "manifest.json")))
rec = {e["path"]: e for e in m["entries"] if e.get("type") == "file"}
files = set()
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.relpath(os.path.join(d, n), root)
        if p != "manifest.json" and not os.path.islink(os.path.join(d, n)):
            files.add(p)
bad = [p for p in files if p not in rec] + [p for p in rec if p not in files]
paths = sorted(p for p in rec if p in files)
for i in range(0, len(paths), 500):
    part = paths[i:i + 500]
    out = subprocess.run(["xxhsum", "-H2", "--"] + part, cwd=root, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    for p, line in zip(part, out):
        h, name = line.split(None, 1)
        if name != p or h != rec[p]["xxh3_128"].lower() or \
           os.path.getsize(os.path.join(root, p)) != rec[p]["size"]:
            bad.append(p)
if bad:
    sys.exit("%d files disagree with the manifest, e.g. %s" % (len(bad),
                                                                sorted(bad)[:3]))
print(len(paths))
EOF
nfiles=0
for n in $want; do
	f=$STORE/$n.ckpt
	out=$(timeout "$(T 60)" unzip -tq "$f" 2>&1) || fail "unzip -t $n.ckpt: $out"
	ex=$WORK/ex/$n
	mkdir -p "$ex"
	out=$(timeout "$(T 60)" unzip -q -d "$ex" "$f" 2>&1) || fail "unzip $n.ckpt: $out"
	k=$(python3 "$WORK/verify.py" "$ex") || fail "$n.ckpt: $k"
	nfiles=$((nfiles + k))
	for t in world workspace session; do
		[ -d "$ex/$t" ] || continue
		out=$(timeout "$(T 60)" diff -r --no-dereference "$ex/$t" "$S/$n/$t" 2>&1) ||
			fail "snapshots/$n/$t differs from unzip's: $out"
	done
	rm -rf "$ex"
done
hwm=$(awk '/^VmHWM/ { print $2, $3 }' "/proc/$DAEMON_PID/status")
note "stress: $(wc -w <<<"$want") checkpoints verified ($nfiles files:" \
	"unzip -t, xxh3_128, sizes, read through the mount); daemon VmHWM $hwm"

# ---- the log, and a clean exit -----------------------------------------------------
check_log "$DAEMON_LOG"
unexpected=$(grep -E 'refused|read:|open:|unreadable|rror' "$DAEMON_LOG" |
	grep -vE '^ckptfs: checkpoint p[0-9]+ refused: ' || true)
[ -z "$unexpected" ] || fail "unexpected lines in the daemon's log: $unexpected"
pid=$DAEMON_PID
out=$(fusermount3 -u "$MNT" 2>&1) || fail "fusermount3 -u: $out"
_unmnt "$MNT"
daemon_exits "$pid" "$DAEMON_LOG" "$STRESS_EXIT_WAIT" "after the unmount"
exit 0
