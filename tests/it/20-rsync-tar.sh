#!/bin/bash
# 20-rsync-tar.sh - the mount's metadata is stable enough for rsync and tar.
#
# A second `rsync -a` from the mount transfers no file; `rsync -aH` and tar
# see no hardlinks; a workspace rsynced out and checkpointed again mounts
# byte-, mode- and time-identical; st_ino is unique across the mount (two
# checkpoints of the same tree included) and stable across remounts, even
# when another checkpoint joined the store in between.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need rsync rsync

RUN=$WORK/run
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$RUN" 2
C1=$(($(date -u -d 2026-11-22T09:00:00Z +%s) * 1000000000))
mkckpt "$RUN" "$STORE/gen1.ckpt" -n gen1 -c "$C1" -o user
mkckpt "$RUN" "$STORE/gen2.ckpt" -n gen2 -p gen1 -c $((C1 + 60000000000)) \
	-o user
ckpt_mount "$STORE" "$MNT"

# ---- rsync -a twice ---------------------------------------------------------
nfiles=$(find "$MNT/snapshots" -type f | wc -l)
timeout 60 rsync -a --stats "$MNT/snapshots/" "$WORK/copy/" >"$WORK/rs1" 2>&1 ||
	fail "first rsync -a from the mount: $(cat "$WORK/rs1")"
assert_eq "Number of regular files transferred: $nfiles" \
	"$(grep '^Number of regular files transferred:' "$WORK/rs1" |
		tr -d ,)" "first rsync"
timeout 60 rsync -a --stats "$MNT/snapshots/" "$WORK/copy/" >"$WORK/rs2" 2>&1 ||
	fail "second rsync -a from the mount: $(cat "$WORK/rs2")"
assert_eq "Number of regular files transferred: 0" \
	"$(grep '^Number of regular files transferred:' "$WORK/rs2")" \
	"second rsync -a (metadata not stable)"
for tier in world workspace session; do
	out=$(diff -r --no-dereference "$RUN/$tier" "$WORK/copy/gen1/$tier" 2>&1) ||
		fail "rsync copy of $tier differs from its source: $out"
done

# ---- rsync -aH sees no hardlinks -------------------------------------------
out=$(timeout 60 rsync -aH --dry-run --itemize-changes "$MNT/snapshots/" \
	"$WORK/copyH/" 2>&1) || fail "rsync -aH --dry-run: $out"
if grep -e ' => ' <<<"$out" >&2; then
	fail "rsync -aH takes the files above for hardlinks"
fi

# ---- round trip: rsync the tiers out, checkpoint them again, mount ----------
RUN2=$WORK/run2
mkdir -p "$RUN2"
for tier in world workspace session; do
	timeout 60 rsync -a "$MNT/snapshots/gen1/$tier/" "$RUN2/$tier/" ||
		fail "rsync -a of $tier out of the mount"
done
mkdir -p "$WORK/store2"
mkckpt "$RUN2" "$WORK/store2/rt.ckpt" -n rt -c "$C1" -o user
ckpt_mount "$WORK/store2" "$WORK/mnt2"
R=$WORK/mnt2/snapshots/rt
S=$MNT/snapshots/gen1
for tier in world workspace session; do
	out=$(diff -r --no-dereference "$S/$tier" "$R/$tier" 2>&1) ||
		fail "round trip of $tier: $out"
	out=$(diff -r --no-dereference "$RUN/$tier" "$R/$tier" 2>&1) ||
		fail "round trip of $tier against the source: $out"
	# mtimes of regular files only: rsync leaves a directory or symlink it
	# created with its own time when the source's falls in the same second.
	assert_eq "$(find "$S/$tier" \( -type f -printf '%P %y %m %s %T@\n' \) \
			-o -printf '%P %y %m\n' | sort)" \
		"$(find "$R/$tier" \( -type f -printf '%P %y %m %s %T@\n' \) \
			-o -printf '%P %y %m\n' | sort)" \
		"round trip of $tier: path type mode size mtime"
done
if command -v getfattr >/dev/null 2>&1; then
	while IFS= read -r -d '' f; do
		a=$(getfattr --only-values -n user.ckpt.xxh128 "$S/$f" 2>&1)
		b=$(getfattr --only-values -n user.ckpt.xxh128 "$R/$f" 2>&1)
		assert_eq "$a" "$b" "user.ckpt.xxh128 of $f after the round trip"
	done < <(cd "$S" && find world workspace session -type f -print0)
fi
ckpt_umount "$WORK/mnt2"

# ---- tar: no hardlink entries, clean exit, identical extraction --------------
timeout 60 tar -cf "$WORK/t.tar" -C "$MNT/snapshots" . 2>"$WORK/tar.err" ||
	fail "tar -c exited $?: $(cat "$WORK/tar.err")"
[ ! -s "$WORK/tar.err" ] || fail "tar -c warned: $(cat "$WORK/tar.err")"
if tar -tvf "$WORK/t.tar" | grep -E '^h| link to ' >&2; then
	fail "tar stored the entries above as hardlinks"
fi
mkdir "$WORK/untar"
tar -xf "$WORK/t.tar" -C "$WORK/untar"
for n in gen1 gen2; do
	out=$(diff -r --no-dereference "$RUN/workspace" \
		"$WORK/untar/$n/workspace" 2>&1) || fail "untarred $n: $out"
done

# ---- inode numbers: unique, and stable across remounts -------------------------
find "$MNT" -printf '%i %P\n' | LC_ALL=C sort >"$WORK/ino1"
dups=$(cut -d' ' -f1 "$WORK/ino1" | sort | uniq -d)
for i in $dups; do
	grep "^$i " "$WORK/ino1" >&2
done
[ -z "$dups" ] || fail "the paths above share an st_ino"
ino_a=$(stat -c %i "$MNT/snapshots/gen1/workspace/README.md")
ino_b=$(stat -c %i "$MNT/snapshots/gen2/workspace/README.md")
[ "$ino_a" != "$ino_b" ] || fail "same st_ino in two checkpoints: $ino_a"
ino=$(stat -c %i "$MNT/snapshots/gen2/workspace/src/main.c")
ckpt_umount "$MNT"

# Remount as it was: every inode number is the same.
ckpt_mount "$STORE" "$MNT"
find "$MNT" -printf '%i %P\n' | LC_ALL=C sort >"$WORK/ino2"
out=$(diff "$WORK/ino1" "$WORK/ino2") || fail "st_ino changed on remount: $out"
assert_eq "$MNT/snapshots/gen2/workspace/src/main.c" \
	"$(timeout 20 find "$MNT" -inum "$ino")" "find -inum $ino after remount"
ckpt_umount "$MNT"

# A checkpoint that sorts first joins the store: the others keep theirs.
mkckpt "$RUN" "$STORE/aaa.ckpt" -n aaa -c $((C1 - 60000000000)) -o user
ckpt_mount "$STORE" "$MNT"
find "$MNT" -printf '%i %P\n' | LC_ALL=C sort >"$WORK/ino3"
out=$(LC_ALL=C comm -23 "$WORK/ino1" "$WORK/ino3") || true
[ -z "$out" ] || fail "st_ino changed when aaa.ckpt joined: $out"
dups=$(cut -d' ' -f1 "$WORK/ino3" | sort | uniq -d)
[ -z "$dups" ] || fail "st_ino not unique with three checkpoints: $dups"
ckpt_umount "$MNT"
exit 0
