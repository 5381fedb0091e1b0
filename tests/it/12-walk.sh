#!/bin/bash
# 12-walk.sh - what a walk through the mount asks the daemon, and what the
# answers mean to the tools.
#
# Only the user namespace of extended attributes exists: ACLs, security
# labels and trusted names are "not supported" (so ls -l, cp and tar stop
# asking after the first file), an unknown user name is "no such
# attribute"; cp -a, rsync -aAX and tar --acls --xattrs copy a checkpoint
# out silently.  ls -lR asks the daemon for such attributes a bounded number
# of times, however many files it lists.  A long listing left open while
# its checkpoint is replaced returns every name of the old one.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need getfattr attr
need rsync rsync

RUN=$WORK/run
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$RUN" 12
# Enough files that per-file questions would show in the counts below.
for d in a b c d; do
	mkdir -p "$RUN/workspace/many/$d"
	for i in $(seq 1 15); do
		echo "$d $i" >"$RUN/workspace/many/$d/f$i.txt"
	done
done
mkckpt "$RUN" "$STORE/w1.ckpt" -n w1 -o user
ckpt_mount "$STORE" "$MNT" debug
S=$MNT/snapshots/w1
F=$S/workspace/src/main.c

# ---- namespaces -------------------------------------------------------------
# getfattr -n NAME PATH: its error message, or "ok".
xattr_err() {
	local out
	out=$(timeout 10 getfattr --absolute-names -n "$1" "$2" 2>&1) &&
		echo ok && return
	case $out in
	*"Operation not supported"*) echo ENOTSUP ;;
	*"No such attribute"*) echo ENODATA ;;
	*) echo "unexpected: $out" ;;
	esac
}
for p in "$F" "$S/workspace/src" "$S" "$MNT/snapshots" "$MNT"; do
	for n in system.posix_acl_access system.posix_acl_default \
		security.selinux security.capability trusted.ckpt; do
		assert_eq ENOTSUP "$(xattr_err "$n" "$p")" "$n on $p"
	done
	assert_eq ENODATA "$(xattr_err user.nosuch "$p")" "user.nosuch on $p"
done
assert_eq ok "$(xattr_err user.ckpt.xxh128 "$F")" "user.ckpt.xxh128 on $F"
assert_eq ok "$(xattr_err user.ckpt.origin "$S")" "user.ckpt.origin on $S"
out=$(timeout 10 getfattr --absolute-names -d -m - "$F" 2>&1) ||
	fail "getfattr -d -m - $F: $out"
grep -q '^user.ckpt.xxh128=' <<<"$out" || fail "getfattr -d lists: $out"

# ---- the tools copy a checkpoint out silently ------------------------------
out=$(timeout 60 cp -a "$S" "$WORK/cp" 2>&1) || fail "cp -a: $out"
assert_eq "" "$out" "cp -a output"
out=$(diff -r --no-dereference "$RUN/workspace" "$WORK/cp/workspace" 2>&1) ||
	fail "cp -a copy differs: $out"
out=$(timeout 60 rsync -aAX "$S/" "$WORK/rs/" 2>&1) || fail "rsync -aAX: $out"
assert_eq "" "$out" "rsync -aAX output"
out=$(timeout 60 tar --acls --xattrs -cf "$WORK/w1.tar" -C "$MNT/snapshots" \
	w1 2>&1) || fail "tar --acls --xattrs: $out"
assert_eq "" "$out" "tar --acls --xattrs output"

# ---- ls -lR asks a bounded number of times ---------------------------------
nfiles=$(find "$S" | wc -l)
[ "$nfiles" -ge 60 ] || fail "only $nfiles names under $S"
before=$(grep -ac 'opcode: GETXATTR' "$DAEMON_LOG" || true)
timeout 30 ls -lR "$S" >/dev/null || fail "ls -lR $S"
after=$(grep -ac 'opcode: GETXATTR' "$DAEMON_LOG" || true)
asked=$((after - before))
# ls asks once per kind (ACL, label) and remembers "not supported" for the
# device; one more of each is slack for other ls versions.
[ "$asked" -le 4 ] ||
	fail "ls -lR over $nfiles names asked for $asked extended attributes"

# ---- a listing open across a replacement ------------------------------------
# Files and listings already open keep the checkpoint they started on
# (ckptfs(1), THE LIVE STORE): the rest of a long listing comes from the
# old archive, whole, after a new r.ckpt has been renamed over it.
need python3 python3
R=$WORK/rrun
mkdir -p "$R/workspace/d"
for i in $(seq 1 2000); do
	echo "$i" >"$R/workspace/d/a-file-with-a-rather-long-name-$i.txt"
done
mkckpt "$R" "$STORE/r.ckpt" -n r -o user
echo new >"$R/workspace/d/only-in-the-new-one.txt"
mkckpt "$R" "$WORK/r2.ckpt" -n r -o user
D=$MNT/snapshots/r/workspace/d
wait_for 5 test -d "$D" || fail "snapshots/r did not appear"
cat >"$WORK/listing.py" <<'PY'
import os, sys, time
d, new, store = sys.argv[1:4]
it = os.scandir(os.open(d, os.O_RDONLY | os.O_DIRECTORY))
names = [next(it).name for _ in range(10)]
os.rename(new, os.path.join(store, "r.ckpt"))
fresh = os.path.join(d, "only-in-the-new-one.txt")
for _ in range(100):  # until the mount serves the new archive
    if os.path.exists(fresh):
        break
    time.sleep(0.1)
else:
    sys.exit("the new r.ckpt never showed")
names += [e.name for e in it]
print(len(names), len(set(names)),
      sum(n.startswith("a-file-with") for n in names))
PY
got=$(timeout 30 python3 "$WORK/listing.py" "$D" "$WORK/r2.ckpt" "$STORE" 2>&1) ||
	fail "listing across a replacement: $got"
assert_eq "2000 2000 2000" "$got" "names listed across a replacement"

daemon_alive
ckpt_umount "$MNT"
