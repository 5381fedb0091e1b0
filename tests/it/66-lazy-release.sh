#!/bin/bash
# 66-lazy-release.sh - a file open across a lazy unmount is freed at exit.
#
# Five times: a file of a checkpoint is opened, the mount is detached
# (fusermount3 -u -z), and the file is closed, which drops the mount's last
# reference.  The kernel queues the release and tears the connection down
# at once, so the daemon often never receives that release: it must still
# free the handle when its session ends.  Each time the daemon exits with
# status 0 and, in a sanitizer build, LeakSanitizer reports nothing.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"

STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$WORK/r" 1
mkckpt "$WORK/r" "$STORE/a.ckpt" -n a
for i in 1 2 3 4 5; do
	ckpt_mount "$STORE" "$MNT"
	pid=$DAEMON_PID
	log=$DAEMON_LOG
	exec 3<"$MNT/snapshots/a/workspace/README.md"
	out=$(timeout 10 fusermount3 -u -z "$MNT" 2>&1) ||
		fail "fusermount3 -u -z: $out"
	_unmnt "$MNT"
	assert_eq "$(cat "$WORK/r/workspace/README.md")" "$(cat <&3)" \
		"README.md read after the lazy unmount"
	exec 3<&-
	daemon_exits "$pid" "$log" 10 "in round $i, after its last file closed"
done
exit 0
