#!/bin/bash
# 40-live.sh - the store is live.
#
# Into an empty mounted store: a .ckpt added by cp, mv or rsync appears
# within 2 s; temporary names never do; a removed one disappears; a replaced
# one shows its new content to new opens while a descriptor opened before
# the replace (and half read) keeps reading the old bytes; latest follows
# the newest by creation time, not by name or arrival.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need rsync rsync

STORE=$WORK/store
MNT=$WORK/mnt
SRC=$WORK/src
mkdir -p "$STORE" "$SRC"
C=$(($(date -u -d 2026-11-22T09:00:00Z +%s) * 1000000000))
H=3600000000000
make_run "$WORK/ra" 1
make_run "$WORK/rz" 2
make_run "$WORK/rm" 3
mkckpt "$WORK/ra" "$SRC/alpha.ckpt" -n alpha -c $((C + 2 * H))
mkckpt "$WORK/rz" "$SRC/zeta.ckpt" -n zeta -c $((C + 1 * H))
mkckpt "$WORK/rm" "$SRC/mid.ckpt" -n mid -c $((C + 3 * H))
# alpha, second version: random.bin changed (and longer), a file added, one
# removed.
cp -a "$WORK/ra" "$WORK/ra2"
head -c 1572864 /dev/urandom >"$WORK/ra2/workspace/data/random.bin"
echo new >"$WORK/ra2/workspace/only-new.txt"
rm "$WORK/ra2/workspace/README.md"
mkckpt "$WORK/ra2" "$SRC/alpha2.ckpt" -n alpha -c $((C + 2 * H))

ckpt_mount "$STORE" "$MNT"
snaps() { timeout 10 ls -A "$MNT/snapshots" | tr '\n' ' ' | sed 's/ $//'; }
latest() { timeout 5 readlink "$MNT/latest" || true; }
latest_is() { [ "$(latest)" = "snapshots/$1" ]; }
assert_eq "" "$(snaps)" "snapshots/ of an empty store"
[ ! -e "$MNT/latest" ] && [ ! -L "$MNT/latest" ] ||
	fail "latest exists in an empty store: $(latest)"

# ---- cp (written in place) ----------------------------------------------------
cp "$SRC/alpha.ckpt" "$STORE/"
wait_for 2 test -d "$MNT/snapshots/alpha" ||
	fail "a checkpoint added by cp did not appear within 2 s"
out=$(timeout 20 diff -r --no-dereference "$WORK/ra/workspace" \
	"$MNT/snapshots/alpha/workspace" 2>&1) || fail "alpha after cp: $out"
wait_for 2 latest_is alpha ||
	fail "latest is '$(latest)', not snapshots/alpha"

# ---- mv from the same filesystem; older than alpha ----------------------------------
cp "$SRC/zeta.ckpt" "$WORK/zeta.tmp"
mv "$WORK/zeta.tmp" "$STORE/zeta.ckpt"
wait_for 2 test -d "$MNT/snapshots/zeta" ||
	fail "a checkpoint added by mv did not appear within 2 s"
assert_eq "alpha zeta" "$(snaps)" "snapshots/ after mv"
assert_eq snapshots/alpha "$(latest)" \
	"latest after adding an older checkpoint"

# ---- rsync (temporary file, then rename) ---------------------------------------
timeout 20 rsync "$SRC/mid.ckpt" "$STORE/" || fail "rsync into STORE"
wait_for 2 test -d "$MNT/snapshots/mid" ||
	fail "a checkpoint added by rsync did not appear within 2 s"
wait_for 2 latest_is mid ||
	fail "latest is '$(latest)', not the newest, mid"

# ---- temporary names never show ---------------------------------------------
cp "$SRC/mid.ckpt" "$STORE/.beta.ckpt.Ab12Cd"
cp "$SRC/mid.ckpt" "$STORE/beta.ckpt.tmp"
cp "$SRC/mid.ckpt" "$STORE/.beta.ckpt"
sleep 1.5
assert_eq "alpha mid zeta" "$(snaps)" "snapshots/ with temporary files"
rm "$STORE/.beta.ckpt.Ab12Cd" "$STORE/beta.ckpt.tmp" "$STORE/.beta.ckpt"

# ---- rm --------------------------------------------------------------------------
rm "$STORE/mid.ckpt"
wait_for 2 test ! -e "$MNT/snapshots/mid" ||
	fail "a removed checkpoint is still shown after 2 s"
assert_eq "alpha zeta" "$(snaps)" "snapshots/ after rm"
wait_for 2 latest_is alpha ||
	fail "latest is '$(latest)' after rm, not snapshots/alpha"

# ---- replace under an open descriptor ---------------------------------------
F=$MNT/snapshots/alpha/workspace/data/random.bin
OLD=$WORK/ra/workspace/data/random.bin
NEW=$WORK/ra2/workspace/data/random.bin
exec 3<"$F"
timeout 10 dd bs=4096 count=1 status=none <&3 >"$WORK/head.out" ||
	fail "reading the first block of fd 3"
cp "$SRC/alpha2.ckpt" "$STORE/.alpha.ckpt.new"
mv "$STORE/.alpha.ckpt.new" "$STORE/alpha.ckpt"
wait_for 2 cmp -s "$F" "$NEW" ||
	fail "a fresh open does not read the replaced content within 2 s"
assert_eq "$(stat -c %s "$NEW")" "$(stat -c %s "$F")" "size after replace"
wait_for 2 test -f "$MNT/snapshots/alpha/workspace/only-new.txt" ||
	fail "a file added by the replace is not shown"
wait_for 2 test ! -e "$MNT/snapshots/alpha/workspace/README.md" ||
	fail "a file removed by the replace is still shown"
timeout 10 cat <&3 >"$WORK/tail.out" || fail "reading fd 3 after the replace"
exec 3<&-
cat "$WORK/head.out" "$WORK/tail.out" >"$WORK/old.out"
cmp "$WORK/old.out" "$OLD" ||
	fail "the descriptor opened before the replace did not read the old bytes"

# A replace by cp over the file in place also ends up showing new content.
cp "$SRC/zeta.ckpt" "$STORE/alpha.ckpt"
wait_for 3 cmp -s "$F" "$WORK/rz/workspace/data/random.bin" ||
	fail "a checkpoint overwritten in place by cp is not re-read within 3 s"

daemon_alive
ckpt_umount "$MNT"
exit 0
