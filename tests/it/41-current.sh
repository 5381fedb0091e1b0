#!/bin/bash
# 41-current.sh - current/ follows the live run, with no open asked for.
#
# Opens cost the daemon no message, so current/ files are served through
# the page cache: changes to the source must still show, within the
# second the attributes are kept.  Checked: the tree as a save would take
# it; a file appended to, rewritten in place at the same size, copied over
# with its old size and mtime (cp -p, mv), replaced by a rename; names
# created and removed; a file given a secret is refused
# and hands none of it out, then served again once the secret is gone;
# writes refused.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"

STORE=$WORK/store
MNT=$WORK/mnt
RUN=$WORK/run
mkdir -p "$STORE"
make_run "$RUN" 7
W=$RUN/workspace
C=$MNT/current/workspace
ckpt_mount "$STORE" "$MNT" "source=$RUN"

same() { cmp -s "$1" "$2"; }
out=$(timeout 20 diff -r --no-dereference "$W" "$C" 2>&1) ||
	fail "current/workspace differs from the source: $out"

# Appended to: a new size.
cat "$C/README.md" >/dev/null
echo "one more line" >>"$W/README.md"
wait_for 3 same "$W/README.md" "$C/README.md" ||
	fail "an appended line did not show in current/ within 3 s"

# Rewritten in place, same size, new bytes: only the mtime tells.
printf 'AAAAAAAA\n' >"$W/src/same.txt"
wait_for 3 same "$W/src/same.txt" "$C/src/same.txt" ||
	fail "a new file did not show in current/ within 3 s"
sleep 0.05 # a new mtime tick
printf 'BBBBBBBB\n' >"$W/src/same.txt"
wait_for 3 same "$W/src/same.txt" "$C/src/same.txt" ||
	fail "a same-size rewrite did not show in current/ within 3 s"

# Same size and same mtime, new bytes (cp -p, rsync -a): only the ctime
# and the inode tell, which the kernel does not look at.
printf 'CCCCCCCC\n' >"$WORK/c.txt"
touch -r "$W/src/same.txt" "$WORK/c.txt"
cat "$C/src/same.txt" >/dev/null
cp -p "$WORK/c.txt" "$W/src/same.txt"
wait_for 3 same "$W/src/same.txt" "$C/src/same.txt" ||
	fail "a same-size, same-mtime copy (cp -p) did not show within 3 s"
printf 'DDDDDDDD\n' >"$WORK/d.txt"
touch -r "$W/src/same.txt" "$WORK/d.txt"
cat "$C/src/same.txt" >/dev/null
mv "$WORK/d.txt" "$W/src/same.txt"
wait_for 3 same "$W/src/same.txt" "$C/src/same.txt" ||
	fail "a same-size, same-mtime rename into place did not show within 3 s"

# Replaced by a rename, as editors save.
printf 'renamed into place\n' >"$W/src/.main.c.new"
mv "$W/src/.main.c.new" "$W/src/main.c"
wait_for 3 same "$W/src/main.c" "$C/src/main.c" ||
	fail "a file replaced by rename did not show within 3 s"

# Names come and go in listings the kernel caches.
ls "$C/docs" >/dev/null
echo new >"$W/docs/new.txt"
wait_for 3 test -f "$C/docs/new.txt" ||
	fail "a created file did not show within 3 s"
wait_for 3 sh -c 'ls "$1" | grep -qx new.txt' sh "$C/docs" ||
	fail "a created file is not listed within 3 s"
rm "$W/docs/new.txt"
wait_for 3 sh -c '! ls "$1" | grep -qx new.txt' sh "$C/docs" ||
	fail "a removed file is still listed after 3 s"

# A secret makes the file unreadable, and none of it comes out.
key="AKIA""IOSFODNN7""EXAMPLF"
cat "$C/src/private.txt" >/dev/null
printf 'aws_access_key_id = %s\n' "$key" >>"$W/src/private.txt"
wait_for 3 sh -c '! cat "$1" >/dev/null 2>&1' sh "$C/src/private.txt" ||
	fail "a file holding a secret is still readable in current/"
if timeout 10 grep -rq "$key" "$MNT/current" 2>/dev/null; then
	fail "current/ handed out a secret"
fi
printf 'private notes 7\n' >"$W/src/private.txt"
wait_for 3 same "$W/src/private.txt" "$C/src/private.txt" ||
	fail "a file whose secret was removed is not served again within 3 s"

assert_errno EROFS bash -c 'echo x >>"$1"' bash "$C/README.md"
assert_errno EROFS sh -c 'echo x >"$1"' sh "$C/README.md"
same "$W/README.md" "$C/README.md" || fail "a refused write changed the file"

daemon_alive
ckpt_umount "$MNT"
exit 0
