#!/bin/bash
# 10-browse.sh - a checkpoint browses like an ordinary read-only tree.
#
# Layout of the mount; every tier byte- and link-identical to its source
# (diff -r); modes masked to & 0555 (x kept); mtimes to the nanosecond; the
# checkpoint directory dated by "created"; nlink 1; owner = us; st_blocks du
# can use; xattrs; EROFS/EPERM on writes; --help/--version; workspace_only.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need getfattr attr
need setfattr attr

RUN=$WORK/run
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$RUN" 1
C1=$(($(date -u -d 2026-11-22T09:00:00Z +%s) * 1000000000 + 123456789))
C2=$((C1 + 3600 * 1000000000))
mkckpt "$RUN" "$STORE/gen1.ckpt" -n gen1 -c "$C1" -o user
mkckpt "$RUN" "$STORE/gen2.ckpt" -n gen2 -p gen1 -c "$C2" -o agent
sha_before=$(sha256sum "$STORE"/*.ckpt)

# nsdate NS: NS as find's %T@ prints it (10 fractional digits).
nsdate() { printf '%d.%09d0' $(($1 / 1000000000)) $(($1 % 1000000000)); }

ckpt_mount "$STORE" "$MNT"
S=$MNT/snapshots/gen2

# ---- layout -----------------------------------------------------------------
assert_eq ".ckptfs
latest
snapshots" "$(ls -A "$MNT")" "root of the mount"
assert_eq "gen1
gen2" "$(ls -A "$MNT/snapshots")" "snapshots/"
[ -L "$MNT/latest" ] || fail "latest is not a symlink"
assert_eq snapshots/gen2 "$(readlink "$MNT/latest")" "latest"
assert_eq "$(ls -A "$S")" "$(ls -A "$MNT/latest/")" "listing through latest"
[ -f "$MNT/.ckptfs/status" ] || fail ".ckptfs/status is not a regular file"
timeout 10 cat "$MNT/.ckptfs/status" >/dev/null || fail "cannot read status"
assert_eq "manifest.json
session
workspace
world" "$(ls -A "$S")" "checkpoint directory"
python3 - "$S/manifest.json" <<'EOF' || fail "manifest.json through the mount"
import json, sys
m = json.load(open(sys.argv[1]))
assert m["format"] == "ckpt" and m["version"] == 1, m
assert m["name"] == "gen2" and m["parent"] == "gen1", m
EOF

# ---- content, types and symlinks --------------------------------------------
for tier in world workspace session; do
	out=$(timeout 20 diff -r --no-dereference "$RUN/$tier" "$S/$tier" 2>&1) ||
		fail "diff -r --no-dereference $tier: $out"
	out=$(timeout 20 diff -r "$RUN/$tier" "$S/$tier" 2>&1) ||
		fail "diff -r (following links) $tier: $out"
done
assert_eq ../src/run.sh "$(readlink "$S/workspace/bin/run")" "bin/run target"
assert_eq "run a b" "$("$S/workspace/bin/run" a b)" "running the script"

# ---- modes: recorded & 0555 on files, 0555 on dirs ----------------------------
for tier in world workspace session; do
	want=$(tree_listing "$RUN/$tier")
	got=$(find "$S/$tier" -mindepth 1 -printf '%P %y %m\n' | LC_ALL=C sort)
	assert_eq "$want" "$got" "modes in $tier (path type mode)"
done
assert_eq 555 "$(stat -c %a "$S")" "mode of the checkpoint directory"
assert_eq 555 "$(stat -c %a "$S/workspace")" "mode of a tier directory"

# ---- times ------------------------------------------------------------------
for tier in world workspace session; do
	for t in f l d; do
		want=$(find "$RUN/$tier" -mindepth 1 -type $t -printf '%P %T@\n' |
			LC_ALL=C sort)
		got=$(find "$S/$tier" -mindepth 1 -type $t -printf '%P %T@\n' |
			LC_ALL=C sort)
		assert_eq "$want" "$got" "mtimes of type $t in $tier (ns)"
	done
done
assert_eq "$(nsdate "$C2")" "$(find "$S" -maxdepth 0 -printf '%T@')" \
	"mtime of snapshots/gen2 (its created time)"
assert_eq "$(nsdate "$C1")" \
	"$(find "$MNT/snapshots/gen1" -maxdepth 0 -printf '%T@')" \
	"mtime of snapshots/gen1 (its created time)"

# ---- link count, owner, size, blocks ----------------------------------------
assert_eq 1 "$(find "$MNT/snapshots" -type f -printf '%n\n' | sort -u)" \
	"link count of files"
assert_eq "$(id -u):$(id -g)" "$(find "$MNT" -printf '%U:%G\n' | sort -u)" \
	"owner:group of everything"
# st_blocks: du must see real usage.  Whether ckptfs reports the content size
# or its compressed size, a file never uses more than its size rounded up
# plus one block of slack, a non-empty file uses at least one block, and
# 1 MiB of random bytes cannot take less than ~1 MiB either way.
while read -r size blocks path; do
	[ "$size" -eq 0 ] || [ "$blocks" -gt 0 ] ||
		fail "st_blocks is 0 for $path ($size bytes)"
	[ $((blocks * 512)) -le $(((size + 4095) / 4096 * 4096 + 4096)) ] ||
		fail "st_blocks $blocks too large for $path ($size bytes)"
done < <(find "$S" -type f -printf '%s %b %P\n')
assert_eq "$(stat -c %s "$RUN/workspace/data/random.bin")" \
	"$(stat -c %s "$S/workspace/data/random.bin")" "size of random.bin"
kib=$(du -sk "$S/workspace/data/random.bin" | cut -f1)
[ "$kib" -ge 1000 ] || fail "du says random.bin (1 MiB) uses $kib KiB"
apparent=$(du -sk --apparent-size "$S/workspace" | cut -f1)
[ "$apparent" -ge 2048 ] || fail "du --apparent-size of workspace: $apparent"

# ---- extended attributes ----------------------------------------------------
xattr() { getfattr --absolute-names --only-values -n "$1" "$2" 2>/dev/null; }
have_xxhsum=
if command -v xxhsum >/dev/null 2>&1; then
	have_xxhsum=1
else
	note "xxhsum not installed (Debian package xxhash): hash values unchecked"
fi
while IFS= read -r -d '' f; do
	h=$(xattr user.ckpt.xxh128 "$S/$f") ||
		fail "no user.ckpt.xxh128 on $f"
	[[ $h =~ ^[0-9a-f]{32}$ ]] || fail "user.ckpt.xxh128 of $f is '$h'"
	if [ -n "$have_xxhsum" ]; then
		want=$(xxhsum -H2 <"$RUN/$f" | cut -d' ' -f1)
		assert_eq "$want" "$h" "user.ckpt.xxh128 of $f (xxhsum -H2)"
	fi
done < <(cd "$RUN" && find world workspace session -type f -print0)
assert_eq user "$(xattr user.ckpt.origin "$MNT/snapshots/gen1")" "origin gen1"
assert_eq agent "$(xattr user.ckpt.origin "$S")" "origin of gen2"
assert_eq gen1 "$(xattr user.ckpt.parent "$S")" "parent of gen2"
created=$(xattr user.ckpt.created "$MNT/snapshots/gen1") ||
	fail "no user.ckpt.created on snapshots/gen1"
case $created in
"$C1" | 2026-11-22T09:00:00.123456789Z) ;;
*) fail "user.ckpt.created of gen1 is '$created'" ;;
esac
getfattr --absolute-names -d -m - "$S/workspace/README.md" 2>/dev/null |
	grep -q '^user.ckpt.xxh128=' || fail "getfattr -d does not list xxh128"

# ---- writes are refused -----------------------------------------------------
F=$S/workspace/README.md
assert_errno EROFS touch "$F"
assert_errno EROFS touch "$S/workspace/new.txt"
assert_errno EROFS rm -f "$F"
assert_errno EROFS mv "$F" "$S/workspace/README2.md"
assert_errno EROFS sh -c 'echo x >"$1"' sh "$F"
# Opens cost no message, so an append is refused at its first write; bash,
# unlike dash, reports the errno of a failed write.
assert_errno EROFS bash -c 'echo x >>"$1"' bash "$F"
assert_errno EROFS sh -c 'echo x >"$1"' sh "$S/workspace/src/new.c"
assert_errno EROFS truncate -s 0 "$F"
assert_errno EROFS chmod 0777 "$F"
assert_errno EROFS mkdir "$S/workspace/newdir"
assert_errno EROFS rmdir "$S/workspace/empty"
assert_errno EROFS ln -s README.md "$S/workspace/newlink"
assert_errno EROFS setfattr -n user.x -v 1 "$F"
assert_errno EROFS touch "$S/manifest.json"
assert_errno EPERM mkdir "$MNT/x"
assert_errno EPERM touch "$MNT/x"
assert_errno EPERM touch "$MNT/.ckptfs/x"
assert_errno EPERM mkdir "$MNT/.ckptfs/x"
assert_errno EROFS mkdir "$MNT/snapshots/new"
assert_eq "$sha_before" "$(sha256sum "$STORE"/*.ckpt)" "archives after writes"
assert_eq "gen1.ckpt
gen2.ckpt" "$(ls -A "$STORE")" "the store after refused writes"
assert_eq "gen1
gen2" "$(ls -A "$MNT/snapshots")" "snapshots/ after refused writes"
out=$(timeout 20 diff -r --no-dereference "$RUN/workspace" "$S/workspace" 2>&1) ||
	fail "workspace changed after refused writes: $out"

# A shared writable map takes writes into the kernel's cache before any
# request reaches the daemon; the refused write-back has them dropped, so
# the file reads as it was again.
timeout 20 python3 - "$F" <<'EOF' || fail "a refused write through a shared map"
import mmap, os, sys, time
path = sys.argv[1]
with open(path, "rb") as f:
    orig = f.read()
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:4] = b"XXXX"
try:
    m.flush()
    sys.exit("msync of a written map succeeded")
except OSError:
    pass
m.close()
os.close(fd)
for _ in range(60):
    with open(path, "rb") as f:
        if f.read() == orig:
            sys.exit(0)
    time.sleep(0.05)
sys.exit("the refused write still shows after 3 s")
EOF
out=$(timeout 20 diff -r --no-dereference "$RUN/workspace" "$S/workspace" 2>&1) ||
	fail "workspace changed after a refused write through a map: $out"
daemon_alive
ckpt_umount "$MNT"

# ---- allow_other: opens ask, and a write open is refused --------------------
# Other users could map a file shared and writable: with allow_other and
# without default_permissions every open reaches the daemon.
ckpt_mount "$STORE" "$MNT" allow_other
assert_errno EROFS sh -c 'echo x >>"$1"' sh "$F"
assert_errno EROFS python3 -c 'import os, sys; os.open(sys.argv[1], os.O_RDWR)' "$F"
cmp -s "$RUN/workspace/README.md" "$F" || fail "README.md under allow_other"
daemon_alive
ckpt_umount "$MNT"

# ---- --help, --version --------------------------------------------------------
out=$(timeout 10 "$CKPTFS" --help 2>&1) || fail "ckptfs --help exited $?"
for o in workspace_only ro; do
	grep -qw -- "$o" <<<"$out" || fail "ckptfs --help does not mention $o"
done
out=$(timeout 10 "$CKPTFS" --version 2>&1) || fail "ckptfs --version exited $?"
[ -n "$out" ] || fail "ckptfs --version printed nothing"

# ---- -o workspace_only (and ro) ---------------------------------------------
ckpt_mount "$STORE" "$MNT" workspace_only,ro
for n in gen1 gen2; do
	assert_eq "manifest.json
workspace
world" "$(ls -A "$MNT/snapshots/$n")" "snapshots/$n under workspace_only"
done
found=$(find "$MNT" -name '*session*' -o -name '*.jsonl')
assert_eq "" "$found" "session files visible under workspace_only"
assert_errno ENOENT cat "$MNT/snapshots/gen1/session/projects/p1/abc.jsonl"
assert_errno ENOENT stat "$MNT/latest/session"
out=$(timeout 20 diff -r --no-dereference "$RUN/workspace" \
	"$MNT/snapshots/gen1/workspace" 2>&1) ||
	fail "workspace under workspace_only: $out"
assert_errno EROFS mkdir "$MNT/snapshots/new"
# The manifest is served too: under workspace_only it must not name the
# session tier's files either.
if grep -q '"session/' "$MNT/snapshots/gen1/manifest.json"; then
	fail "manifest.json lists session entries under workspace_only"
fi
ckpt_umount "$MNT"
exit 0
