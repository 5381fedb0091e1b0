#!/bin/bash
# 67-open-removed.sh - an open file outlives its checkpoint, fstat included.
#
# A file of a checkpoint is opened; then the checkpoint is removed from
# STORE (rm), deleted through the mount (rmdir), renamed (mv), or replaced
# by other content (cp over it).  The descriptor keeps working: fstat asks
# the daemon (stat --cached=never, as a program does once the kernel's
# attributes have expired) and gets the size of the file that was opened,
# and reading gives the bytes it was opened on.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
stat --cached=never / >/dev/null 2>&1 ||
	skip "stat --cached=never needs coreutils 8.32 or later"

STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$WORK/r1" 1
make_run "$WORK/r2" 2
echo "a longer README, so that the sizes differ" >>"$WORK/r2/workspace/README.md"
mkckpt "$WORK/r1" "$WORK/one.ckpt" -n one
mkckpt "$WORK/r2" "$WORK/two.ckpt" -n two
want=$(cat "$WORK/r1/workspace/README.md")
size=$(stat -c %s "$WORK/r1/workspace/README.md")
ckpt_mount "$STORE" "$MNT"
for how in rm rmdir mv replace; do
	cp "$WORK/one.ckpt" "$STORE/$how.ckpt"
	wait_for 5 test -d "$MNT/snapshots/$how" || fail "$how not shown"
	exec 3<"$MNT/snapshots/$how/workspace/README.md"
	case $how in
	rm) rm "$STORE/rm.ckpt" ;;
	rmdir) rmdir "$MNT/snapshots/rmdir" ;;
	mv) mv -T "$MNT/snapshots/mv" "$MNT/snapshots/mv2" ;;
	replace) cp "$WORK/two.ckpt" "$STORE/.tmp" && mv "$STORE/.tmp" "$STORE/replace.ckpt" ;;
	esac
	gone() { [ ! -e "$MNT/snapshots/$how" ] || [ "$how" = replace ]; }
	wait_for 5 gone || fail "$how still shown"
	sleep 0.3 # the rescan has run (replace: the new file is the checkpoint)
	out=$(timeout 5 stat -L --cached=never -c %s /dev/fd/3 2>&1) ||
		fail "fstat of a file open across '$how': $out"
	assert_eq "$size" "$out" "fstat size of a file open across '$how'"
	assert_eq "$want" "$(timeout 5 cat <&3)" "reading a file open across '$how'"
	exec 3<&-
done
daemon_alive
ckpt_umount "$MNT"
exit 0
