#!/bin/bash
# 30-hostile.sh - hostile archives and store entries, next to good checkpoints.
#
# scripts/mkhostile writes the store and its EXPECT file; checked here: the
# exact set of snapshots/; refused archives absent and named, with a reason,
# in .ckptfs/status (also when one arrives while mounted); every path find
# lists is allowed by EXPECT; every hidden path is ENOENT by exact name; no
# byte of any hidden entry (CKPT_SECRET_MARKER) is readable; no special file
# or setuid bit anywhere; bad CRCs and lying sizes give EIO and never more
# than declared; the FIFO in STORE hangs nothing; an archive truncated under
# the mount takes nothing down; the good checkpoints stay diff-clean.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need python3 python3

STORE=$WORK/store
MNT=$WORK/mnt
E=$STORE/EXPECT
timeout 30 python3 "$SRCDIR/scripts/mkhostile" "$STORE" ||
	fail "scripts/mkhostile $STORE"
C=$(($(date -u -d 2026-11-23T09:00:00Z +%s) * 1000000000))
for g in 1 2; do
	make_run "$WORK/good$g" "$g"
	mkckpt "$WORK/good$g" "$STORE/good$g.ckpt" -n "good$g" \
		-c $((C + g * 1000000000)) -o user
done

# dec FIELD: the bytes an EXPECT field stands for (\xNN escapes).
dec() { printf -v DEC '%b' "$1"; }

ckpt_mount "$STORE" "$MNT"
T="timeout -k 2 10"

# ---- which checkpoints exist ------------------------------------------------
want=$({
	awk '$1 == "shown" { print $2 }' "$E"
	echo good1
	echo good2
} | LC_ALL=C sort)
got=$($T ls -A "$MNT/snapshots") || fail "ls snapshots/ failed or hung"
assert_eq "$want" "$(LC_ALL=C sort <<<"$got")" "snapshots/"
assert_eq snapshots/good2 "$(readlink "$MNT/latest")" "latest"
while read -r -u 4 kind name _; do
	case $kind in refused | absent) ;; *) continue ;; esac
	dec "$name"
	if [ -e "$MNT/snapshots/$DEC" ] || [ -L "$MNT/snapshots/$DEC" ]; then
		fail "snapshots/$DEC exists ($kind)"
	fi
done 4<"$E"

# ---- the status file names each refused archive, with a reason ----------------
$T cat "$MNT/.ckptfs/status" >"$WORK/status" || fail "cannot read status"
check_status() { # REFUSED_NAME...
	python3 - "$WORK/status" "$@" <<'EOF'
import json, sys
objs = []
for i, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    if line.strip():
        try:
            objs.append(json.loads(line))
        except ValueError as e:
            sys.exit("status line %d is not JSON (%s): %r" % (i, e, line))
def strings(o):
    if isinstance(o, dict):
        for v in o.values():
            yield from strings(v)
    elif isinstance(o, list):
        for v in o:
            yield from strings(v)
    elif isinstance(o, str):
        yield o
def about(name):
    return [o for o in objs if isinstance(o, dict) and
            any(s in (name, name + ".ckpt") for s in strings(o))]
bad = []
for name in sys.argv[2:]:
    if not any(o.get("reason") or o.get("rule") for o in about(name)):
        bad.append(name)
if bad:
    sys.exit("status has no line with a reason for: " + " ".join(bad))
if not any("credential" in json.dumps(o) for o in about("names")):
    sys.exit("status does not count the credentials hidden in names")
EOF
}
refused=$(awk '$1 == "refused" { print $2 }' "$E")
# shellcheck disable=SC2086 # names are plain words
out=$(check_status $refused 2>&1) || {
	cat "$WORK/status" >&2
	fail "$out"
}

# ---- nothing but the allowed paths is listed -----------------------------------
for n in $(awk '$1 == "shown" { print $2 }' "$E"); do
	$T find "$MNT/snapshots/$n" -mindepth 1 -printf '%P\0' \
		>"$WORK/list.$n" || fail "find snapshots/$n failed or hung"
done
python3 - "$E" "$WORK" <<'EOF' || fail "paths listed that EXPECT does not allow"
import codecs, os, sys
exp, work = sys.argv[1], sys.argv[2]
def dec(f):
    return codecs.escape_decode(f.encode())[0]
allowed = {}
for line in open(exp, encoding="ascii"):
    f = line.split()
    if len(f) >= 2 and f[0] == "shown":
        allowed.setdefault(f[1], set())
    if len(f) >= 3 and f[0] in ("visible", "maybe", "file", "link"):
        p = dec(f[2])
        while p:
            allowed.setdefault(f[1], set()).add(p)
            p = p.rpartition(b"/")[0]
bad = 0
for name, ok in allowed.items():
    seen = open(os.path.join(work, "list." + name), "rb").read()
    for p in filter(None, seen.split(b"\0")):
        if p not in ok:
            print("snapshots/%s: leaked %r" % (name, p), file=sys.stderr)
            bad = 1
sys.exit(bad)
EOF

# ---- EXPECT, line by line ---------------------------------------------------------
while read -r -u 4 kind name path arg; do
	case $kind in
	visible | hidden | file | link | mode | eio | maxbytes) ;;
	*) continue ;;
	esac
	dec "$name"
	n=$DEC
	dec "$path"
	p=$DEC
	f=$MNT/snapshots/$n/$p
	case $kind in
	visible)
		[ -e "$f" ] || [ -L "$f" ] || fail "$n: '$path' is not visible"
		;;
	hidden)
		if [ -e "$f" ] || [ -L "$f" ]; then
			fail "$n: hidden '$path' exists by exact name"
		fi
		long="" rest=$p/ # LC_ALL=C: ${#c} counts bytes
		while [ -n "$rest" ]; do
			c=${rest%%/*}
			rest=${rest#*/}
			[ "${#c}" -le 255 ] || long=1
		done
		if [ -n "$long" ]; then
			for cmd in stat cat; do
				out=$($T "$cmd" -- "$f" 2>&1) && fail "$n: '$path' opens"
				case $out in
				*"No such file"* | *"File name too long"*) ;;
				*) fail "$n: $cmd '$path': $out" ;;
				esac
			done
		else
			assert_errno ENOENT stat -- "$f"
			assert_errno ENOENT cat -- "$f"
		fi
		;;
	file)
		[ -f "$f" ] && [ ! -L "$f" ] || fail "$n: '$path' is not a file"
		got=$($T sha256sum <"$f" | cut -d' ' -f1)
		assert_eq "$arg" "$got" "$n: content of '$path'"
		;;
	link)
		[ -L "$f" ] || fail "$n: '$path' is not a symlink"
		dec "$arg"
		assert_eq "$DEC" "$(readlink "$f")" "$n: target of '$path'"
		;;
	mode)
		assert_eq "$arg" "$(stat -c %a "$f")" "$n: mode of '$path'"
		;;
	eio | maxbytes)
		rc=0
		$T cat "$f" >"$WORK/read.out" 2>"$WORK/read.err" || rc=$?
		bytes=$(stat -c %s "$WORK/read.out")
		[ "$bytes" -le "$arg" ] ||
			fail "$n: read $bytes bytes of '$path' (at most $arg)"
		[ "$kind" = eio ] || continue
		[ "$rc" -ne 0 ] && grep -q 'Input/output error' "$WORK/read.err" ||
			fail "$n: reading '$path' gave status $rc," \
				"$bytes bytes, '$(cat "$WORK/read.err")'; want EIO"
		# The last byte alone is never served unchecked.
		size=$(stat -c %s "$f")
		rc=0
		$T dd if="$f" bs=1 skip=$((size - 1)) count=1 status=none \
			>"$WORK/read.out" 2>"$WORK/read.err" || rc=$?
		[ "$rc" -ne 0 ] && grep -q 'Input/output error' "$WORK/read.err" ||
			fail "$n: the last byte of '$path' reads without EIO"
		;;
	esac
done 4<"$E"

# ---- no secret byte, special file or setuid bit anywhere --------------------------
out=$($T grep -r -l -a CKPT_SECRET_MARKER "$MNT" 2>/dev/null) || true
[ -z "$out" ] || fail "hidden content readable in: $out"
out=$($T grep -R -l -a CKPT_SECRET_MARKER "$MNT" 2>/dev/null) || true
[ -z "$out" ] || fail "hidden content readable through a link in: $out"
out=$($T find "$MNT" \( -type p -o -type c -o -type b -o -type s \
	-o -perm /6000 \) -printf '%P\n') || fail "find over the mount"
[ -z "$out" ] || fail "special files or setuid/setgid bits shown: $out"

# ---- the good checkpoints are intact -----------------------------------------------
for g in 1 2; do
	for tier in world workspace session; do
		out=$($T diff -r --no-dereference "$WORK/good$g/$tier" \
			"$MNT/snapshots/good$g/$tier" 2>&1) ||
			fail "good$g/$tier: $out"
	done
done

# ---- the daemon survived, and said why it refused ------------------------------------
daemon_alive
[ -p "$STORE/fifo.ckpt" ] || fail "the FIFO in STORE is gone"
for r in $refused; do
	grep -qF -- "$r" "$DAEMON_LOG" || fail "the log does not mention $r"
done

# ---- a hostile archive arriving while mounted is refused too --------------------------
cp "$STORE/quoted.ckpt" "$WORK/late.tmp"
mv "$WORK/late.tmp" "$STORE/late.ckpt"
late_in_status() {
	$T cat "$MNT/.ckptfs/status" >"$WORK/status" 2>/dev/null &&
		check_status late >/dev/null 2>&1
}
wait_for 3 late_in_status || fail "late.ckpt (an overlap) not in status in 3 s"
[ ! -e "$MNT/snapshots/late" ] || fail "late.ckpt (an overlap) is shown"

# ---- an archive truncated under the mount takes nothing down ---------------------------
cp "$STORE/good1.ckpt" "$STORE/victim.ckpt"
wait_for 3 test -d "$MNT/snapshots/victim" || fail "victim.ckpt never appeared"
V=$MNT/snapshots/victim/workspace/data/random.bin
cmp -s "$V" "$WORK/good1/workspace/data/random.bin" || fail "victim reads wrong"
truncate -s $(($(stat -c %s "$STORE/victim.ckpt") * 2 / 5)) "$STORE/victim.ckpt"
rc=0
$T cat "$MNT/snapshots/victim/workspace/data/compressible.txt" \
	>"$WORK/victim.out" 2>/dev/null || rc=$?
case $rc in 124 | 137) fail "reading a truncated archive hung" ;; esac
if [ "$rc" -eq 0 ]; then
	cmp -s "$WORK/victim.out" "$WORK/good1/workspace/data/compressible.txt" ||
		fail "a truncated archive returned wrong bytes without an error"
fi
daemon_alive
out=$($T diff -r --no-dereference "$WORK/good2/workspace" \
	"$MNT/snapshots/good2/workspace" 2>&1) || fail "good2 after victim: $out"
rm -f "$STORE/victim.ckpt"

ckpt_umount "$MNT"
exit 0
