#!/bin/bash
# 65-store-faults.sh - STORE misbehaving under a live mount.
#
# The store is the directory its path names, looked up again at every
# rescan: removed while mounted (rm -rf STORE), every checkpoint leaves
# snapshots/ within a few seconds, a save fails (ENOENT), and descriptors
# already open keep reading what they were opened on; a directory created
# again at that path is served from the next rescan (2 s), its checkpoints
# appear, later changes show through inotify again, and saves land there.
# Moved away (mv STORE), it is no longer served, nor saved into; moved
# back, it is.
# Made unreadable (chmod 000; the daemon runs without CAP_DAC_OVERRIDE,
# as root otherwise bypasses the mode), snapshots/ empties; readable again,
# everything is back.  Filled with thousands of files that are not
# checkpoints (subdirectories, a directory and a FIFO named *.ckpt, links
# to a checkpoint and to /dev/zero, a 64 GiB sparse file): nothing new
# shows, nothing hangs, the sparse NAME.ckpt is refused with a reason.
# A .ckpt truncated in place, and another overwritten in place with
# garbage of the same size, while a reader is in the middle of a file of
# each: both readers get EIO (never a whole wrong file), the other
# checkpoints read as before, the rescan refuses both with a reason in the
# status file, and both come back once their files are whole again.
# Unmounting while files are open and read: fusermount3 -u fails (busy)
# and the daemon keeps serving; fusermount3 -u -z detaches at once, the
# open files keep reading to the end, the detached mount answers through a
# working directory inside it, and once that goes the daemon exits with
# status 0 and a clean log.  After every step the daemon still answers.
# shellcheck disable=SC2010 # ls | grep on names this test chose
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need python3 python3
need setpriv util-linux
need mkfifo coreutils
# A pyenv shim costs 0.1 s a call: call the interpreter it resolves to.
PY3=$(python3 -c 'import sys; print(sys.executable)')
python3() { "$PY3" "$@"; }

STORE=$WORK/store
MNT=$WORK/mnt
KEEP=$WORK/keep # good copies of every checkpoint
mkdir -p "$STORE" "$KEEP"
make_run "$WORK/ra" 1
make_run "$WORK/rb" 2
# A file far beyond the kernel's readahead and the reader's ring, so that
# a reader stopped in its first MiB still needs the archive afterwards.
head -c $((8 << 20)) /dev/urandom >"$WORK/ra/workspace/data/big.bin"
head -c $((8 << 20)) /dev/urandom >"$WORK/rb/workspace/data/big.bin"
mkckpt "$WORK/ra" "$KEEP/a.ckpt" -n a
mkckpt "$WORK/rb" "$KEEP/b.ckpt" -n b
cp "$KEEP/a.ckpt" "$KEEP/b.ckpt" "$STORE/"

# answers: the daemon runs, and its mount answers within 5 s.
answers() {
	local out
	daemon_alive
	out=$(timeout 5 ls -A "$MNT/snapshots" 2>&1) ||
		fail "ls snapshots/ ($1): $out"
	out=$(timeout 5 cat "$MNT/.ckptfs/status" 2>&1) ||
		fail "cat .ckptfs/status ($1): $out"
}
shown() { timeout 5 ls -A "$MNT/snapshots" 2>/dev/null | tr '\n' ' '; }
shows() { [ "$(shown)" = "$1" ]; }
# same NAME RUN: the checkpoint reads as its source.
same() {
	local out
	out=$(timeout 20 diff -r --no-dereference "$2/workspace" \
		"$MNT/snapshots/$1/workspace" 2>&1) || fail "snapshots/$1: $out"
}
# status_of NAME: "result rule" of NAME's line in the status file.
status_of() {
	timeout 5 cat "$MNT/.ckptfs/status" | python3 -c 'import json, sys
for l in sys.stdin:
    o = json.loads(l)
    if o.get("name") == sys.argv[1]:
        print(o["result"], o.get("rule", ""))' "$1"
}

# status_is NAME RESULT: NAME's result in the status file ("" for none).
status_is() {
	local r
	r=$(status_of "$1")
	[ "${r%% *}" = "$2" ]
}
# within SECONDS CMD...: CMD (a function) succeeds before SECONDS of wall
# time pass (wait_for counts polls, which a slow CMD stretches).
within() {
	local end
	end=$(awk -v t="$EPOCHREALTIME" -v s="$1" 'BEGIN { printf "%.6f", t + s }')
	shift
	until "$@"; do
		awk -v t="$EPOCHREALTIME" -v e="$end" 'BEGIN { exit !(t < e) }' ||
			return 1
		sleep 0.05
	done
}

# The reader: opens PATH, reads its first 256 KiB, says so (READY), waits
# for GO, then reads on to the end.  Prints "ok", or the error's name, then
# whether every byte it got matches EXPECTED (prefix/wrong).
cat >"$WORK/reader.py" <<'EOF'
import errno, os, sys, time
path, expected, ready, go = sys.argv[1:5]
want = open(expected, "rb").read()
got = bytearray()
result = "ok"
fd = os.open(path, os.O_RDONLY)
try:
    got += os.read(fd, 256 << 10)
    open(ready, "w").close()
    t = time.monotonic()
    while not os.path.exists(go):
        if time.monotonic() - t > 20:
            sys.exit("reader: no GO within 20 s")
        time.sleep(0.01)
    while True:
        b = os.read(fd, 128 << 10)
        if not b:
            break
        got += b
except OSError as e:
    result = errno.errorcode.get(e.errno, str(e.errno))
os.close(fd)
print(result, "prefix" if want.startswith(bytes(got)) else "wrong", len(got))
EOF
# start_reader TAG PATH EXPECTED: a reader in the background, stopped
# after its first read.
declare -A READER
start_reader() {
	timeout -k 2 40 "$PY3" "$WORK/reader.py" "$2" "$3" "$WORK/ready.$1" \
		"$WORK/go.$1" >"$WORK/reader.$1" 2>&1 &
	READER[$1]=$!
	track_pid $!
	wait_for 10 test -e "$WORK/ready.$1" ||
		fail "reader $1 of $2: no first read within 10 s: $(cat "$WORK/reader.$1")"
}
# end_reader TAG: let it read on; its report in REPLY.
end_reader() {
	local rc=0
	: >"$WORK/go.$1"
	wait "${READER[$1]}" || rc=$?
	_untrack "${READER[$1]}"
	[ "$rc" -eq 0 ] || fail "reader $1 exited with $rc: $(cat "$WORK/reader.$1")"
	REPLY=$(cut -d' ' -f1,2 "$WORK/reader.$1")
}

# ---- the store removed, then created again -------------------------------------
ckpt_mount "$STORE" "$MNT" "source=$WORK/ra"
wait_for 5 shows "a b " || fail "snapshots/ at mount: $(shown)"
start_reader gone "$MNT/snapshots/a/workspace/data/big.bin" \
	"$WORK/ra/workspace/data/big.bin"
rm -rf "$STORE"
wait_for 5 shows "" || fail "snapshots/ 5 s after rm -rf STORE: $(shown)"
answers "STORE removed"
[ ! -e "$MNT/latest" ] || fail "latest still resolves with STORE removed"
assert_errno ENOENT mkdir "$MNT/snapshots/lost"
end_reader gone
assert_eq "ok prefix" "$REPLY" \
	"a descriptor opened before rm -rf STORE, read to its end"
# What a restore from a backup does: the directory first, then the files.
mkdir "$STORE"
cp "$KEEP/a.ckpt" "$STORE/"
wait_for 5 shows "a " ||
	fail "STORE created again with a.ckpt: snapshots/ shows '$(shown)' after 5 s"
same a "$WORK/ra"
# The watch follows the new directory: changes show through inotify, well
# before the next rescan, 2 s after the last one.  Twice in a row, as one
# may coincide with a rescan.
cp "$KEEP/b.ckpt" "$STORE/.b.tmp"
mv "$STORE/.b.tmp" "$STORE/b.ckpt"
within 1.5 shows "a b " ||
	fail "b.ckpt added to the new STORE not shown within 1.5 s: $(shown)"
cp "$KEEP/b.ckpt" "$STORE/b2.ckpt"
within 1.5 shows "a b b2 " ||
	fail "b2.ckpt added to the new STORE not shown within 1.5 s: $(shown)"
rm "$STORE/b2.ckpt"
timeout 30 mkdir "$MNT/snapshots/c" || fail "a save into the new STORE"
[ -f "$STORE/c.ckpt" ] || fail "the save did not land in the new STORE: $(ls -A "$STORE")"
same c "$WORK/ra"
rm "$STORE/c.ckpt" "$STORE/checkpoint.json"
wait_for 5 shows "a b " || fail "snapshots/ after removing c.ckpt: $(shown)"
answers "STORE created again"
# Moved away, the directory is no longer the store; moved back, it is.
mv "$STORE" "$WORK/moved"
wait_for 5 shows "" || fail "snapshots/ 5 s after STORE was moved away: $(shown)"
assert_errno ENOENT mkdir "$MNT/snapshots/lost2"
[ ! -e "$WORK/moved/lost2.ckpt" ] || fail "a save went to the moved-away STORE"
mv "$WORK/moved" "$STORE"
wait_for 5 shows "a b " || fail "snapshots/ after STORE was moved back: $(shown)"
answers "STORE moved back"

# ---- thousands of things that are not checkpoints ---------------------------------
mkdir "$STORE/junk"
(cd "$STORE" && seq -f 'junk%05g.txt' 1 3000 | xargs touch &&
	seq -f 'junk/f%04g.ckpt' 1 500 | xargs touch &&
	seq -f 'dir%03g' 1 200 | xargs mkdir)
mkdir "$STORE/dir.ckpt" "$STORE/x.ckpt.d"
cp "$KEEP/a.ckpt" "$STORE/dir.ckpt/inner.ckpt"
mkfifo "$STORE/fifo.ckpt" "$STORE/fifo"
ln -s a.ckpt "$STORE/link.ckpt"
ln -s /dev/zero "$STORE/zero.ckpt"
cp "$KEEP/a.ckpt" "$STORE/.hidden.ckpt"
cp "$KEEP/a.ckpt" "$STORE/a.ckpt.part"
truncate -s 64G "$STORE/huge.ckpt" "$STORE/huge.bin"
# Let the rescan see it all (a burst: 250 ms at most, or the 2 s rescan).
wait_for 5 status_is huge refused ||
	fail "the 64 GiB sparse huge.ckpt: status '$(status_of huge)', want refused"
answers "junk in STORE"
assert_eq "a b " "$(shown)" "snapshots/ with junk in STORE"
out=$(timeout 20 find "$MNT" 2>&1 | wc -l) || fail "find over the mount: $out"
[ "$out" -gt 20 ] || fail "find over the mount lists $out names"
same a "$WORK/ra"
for n in junk dir x fifo link zero hidden .hidden dir001; do
	[ ! -e "$MNT/snapshots/$n" ] || fail "snapshots/$n is shown"
done
rm -rf "$STORE/junk" "$STORE"/junk*.txt "$STORE"/dir* "$STORE/x.ckpt.d" \
	"$STORE"/fifo* "$STORE/link.ckpt" "$STORE/zero.ckpt" "$STORE/.hidden.ckpt" \
	"$STORE/a.ckpt.part" "$STORE"/huge.*
wait_for 5 status_is huge "" ||
	fail "huge.ckpt still in the status file after its removal"
answers "junk removed"

# ---- checkpoints truncated and overwritten under readers ------------------------
cp "$KEEP/b.ckpt" "$STORE/t.ckpt"
cp "$KEEP/b.ckpt" "$STORE/o.ckpt"
wait_for 5 shows "a b o t " || fail "t and o not shown: $(shown)"
start_reader t "$MNT/snapshots/t/workspace/data/big.bin" \
	"$WORK/rb/workspace/data/big.bin"
start_reader o "$MNT/snapshots/o/workspace/data/big.bin" \
	"$WORK/rb/workspace/data/big.bin"
size=$(stat -c %s "$STORE/o.ckpt")
truncate -s $((size / 8)) "$STORE/t.ckpt"
head -c "$size" /dev/urandom |
	dd of="$STORE/o.ckpt" conv=notrunc bs=1M iflag=fullblock status=none
[ "$(stat -c %s "$STORE/o.ckpt")" -eq "$size" ] || fail "o.ckpt changed size"
# The truncated file runs out: EIO, after correct bytes only.  The
# overwritten one hands out what is there now, but never reaches its end.
end_reader t
assert_eq "EIO prefix" "$REPLY" "the reader of t.ckpt, truncated under it"
end_reader o
[ "${REPLY%% *}" = EIO ] ||
	fail "the reader of o.ckpt, overwritten under it: $REPLY"
answers "t truncated, o overwritten"
wait_for 5 shows "a b " ||
	fail "t and o (truncated, overwritten) still shown after 5 s: $(shown)"
status_is t refused || fail "status of the truncated t: '$(status_of t)'"
status_is o refused ||
	fail "status of the overwritten o: '$(status_of o)'"
same a "$WORK/ra"
same b "$WORK/rb"
# Whole again: in place for t (as a second cp would), atomically for o.
cp "$KEEP/b.ckpt" "$STORE/t.ckpt"
cp "$KEEP/b.ckpt" "$STORE/.o.tmp"
mv "$STORE/.o.tmp" "$STORE/o.ckpt"
wait_for 5 shows "a b o t " || fail "t and o, whole again, not shown: $(shown)"
same t "$WORK/rb"
same o "$WORK/rb"
rm "$STORE/t.ckpt" "$STORE/o.ckpt"
wait_for 5 shows "a b " || fail "snapshots/ after removing t and o: $(shown)"
ckpt_umount "$MNT"

# ---- unreadable ----------------------------------------------------------------------
# Root reads a mode-000 directory anyway: the daemon runs as root without
# the capabilities that bypass permissions (it keeps the one that mounts).
if [ "$(id -u)" -eq 0 ]; then
	printf '#!/bin/sh\nexec setpriv --inh-caps=-all --bounding-set=-dac_override,-dac_read_search "%s" "$@"\n' \
		"$CKPTFS" >"$WORK/ckptfs-nodac"
	chmod +x "$WORK/ckptfs-nodac"
	CKPTFS=$WORK/ckptfs-nodac
fi
ckpt_mount "$STORE" "$MNT"
wait_for 5 shows "a b " || fail "snapshots/ before chmod 000: $(shown)"
start_reader dark "$MNT/snapshots/b/workspace/data/big.bin" \
	"$WORK/rb/workspace/data/big.bin"
chmod 000 "$STORE"
if ! wait_for 5 shows ""; then
	chmod 755 "$STORE"
	fail "snapshots/ 5 s after chmod 000 STORE: $(shown)"
fi
answers "STORE mode 000"
end_reader dark
assert_eq "ok prefix" "$REPLY" \
	"a descriptor opened before chmod 000 STORE, read to its end"
chmod 755 "$STORE"
wait_for 5 shows "a b " || fail "snapshots/ after chmod 755 STORE: $(shown)"
same a "$WORK/ra"
same b "$WORK/rb"
ckpt_umount "$MNT"

# ---- unmounting under readers -------------------------------------------------------
ckpt_mount "$STORE" "$MNT"
start_reader busy "$MNT/snapshots/a/workspace/data/big.bin" \
	"$WORK/ra/workspace/data/big.bin"
out=$(timeout 10 fusermount3 -u "$MNT" 2>&1) &&
	fail "fusermount3 -u succeeded with a file open"
case $out in
*busy*) ;;
*) fail "fusermount3 -u with a file open: $out" ;;
esac
is_mounted "$MNT" || fail "a refused fusermount3 -u unmounted anyway"
answers "after a refused unmount"
end_reader busy
assert_eq "ok prefix" "$REPLY" "the reader after the refused unmount"
same b "$WORK/rb"

# Lazily: a held reader and two readers in a loop, during the unmount.  A
# process whose working directory is in the mount keeps the detached mount
# alive after the readers close, so that the daemon gets their releases:
# a release still queued when the last reference goes is dropped by the
# kernel with the connection, and the daemon never frees that handle.
loops=()
sh -c 'cd "$1" && exec sleep 60' sh "$MNT/snapshots/a/workspace" &
holder=$!
track_pid "$holder"
start_reader lazy "$MNT/snapshots/b/workspace/data/big.bin" \
	"$WORK/rb/workspace/data/big.bin"
for i in 1 2; do
	timeout -k 2 30 sh -c 'while cat "$1" >/dev/null 2>&1; do :; done' sh \
		"$MNT/snapshots/a/workspace/data/big.bin" &
	track_pid $!
	loops+=($!)
done
sleep 0.3
pid=$DAEMON_PID
log=$DAEMON_LOG
out=$(timeout 10 fusermount3 -u -z "$MNT" 2>&1) || fail "fusermount3 -u -z: $out"
is_mounted "$MNT" && fail "still mounted after fusermount3 -u -z"
_unmnt "$MNT"
end_reader lazy
assert_eq "ok prefix" "$REPLY" "the reader across the lazy unmount"
for p in "${loops[@]}"; do
	# Its next open finds the bare directory, which ends the loop.
	wait_for 10 pid_gone "$p" || fail "a reader loop outlived the unmount"
	wait "$p" 2>/dev/null || true
	_untrack "$p"
done
# Detached, the mount still answers whoever is inside it.
out=$(timeout 10 cat "/proc/$holder/cwd/README.md" 2>&1) ||
	fail "the detached mount, through a working directory in it: $out"
assert_eq "$(cat "$WORK/ra/workspace/README.md")" "$out" \
	"README.md read through the detached mount"
sleep 1 # for the readers' releases to reach the daemon
kill "$holder"
wait "$holder" 2>/dev/null || true
_untrack "$holder"
daemon_exits "$pid" "$log" 10 "after the lazy unmount and its last user"
is_mounted "$MNT" && fail "$MNT is mounted at the end"
exit 0
