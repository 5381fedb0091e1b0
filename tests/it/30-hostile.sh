#!/bin/bash
# 30-hostile.sh - hostile archives and store entries, next to good checkpoints.
#
# scripts/mkhostile writes the store and its EXPECT file (the big fixtures
# are in 31-hostile-big.sh); checked here: the exact set of snapshots/;
# each refused archive absent and named in .ckptfs/status with the expected
# rule and a reason (also when one arrives while mounted); the exact count
# of hidden entries per rule of each shown archive; every path find lists
# is allowed by EXPECT; every hidden path is ENOENT by exact name; no byte of
# any hidden entry (CKPT_SECRET_MARKER) is readable; no special file or
# setuid bit anywhere; bad CRCs, hashes and lying sizes give EIO and never
# more than declared; a lying local header refuses its archive once found;
# the FIFO in STORE hangs nothing; an archive truncated under the mount
# takes nothing down; the good checkpoints stay diff-clean; the daemon's
# RSS stays under 256 MiB throughout.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need python3 python3

STORE=$WORK/store
MNT=$WORK/mnt
E=$STORE/EXPECT
timeout 60 python3 "$SRCDIR/scripts/mkhostile" "$STORE" ||
	fail "scripts/mkhostile $STORE"
C=$(($(date -u -d 2026-11-23T09:00:00Z +%s) * 1000000000))
for g in 1 2; do
	make_run "$WORK/good$g" "$g"
	mkckpt "$WORK/good$g" "$STORE/good$g.ckpt" -n "good$g" \
		-c $((C + g * 1000000000)) -o user
done

# dec FIELD: the bytes an EXPECT field stands for (\xNN escapes).
dec() { printf -v DEC '%b' "$1"; }

asan_small_quarantine
ckpt_mount "$STORE" "$MNT"
rss_watch
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

# ---- the status file explains every refusal and every hidden entry ----------
# check_status EXPECT [NAME RULE]...: each refused archive of EXPECT (and
# each NAME given) has a line with result "refused", its expected rule and
# a reason; each shown archive's "hidden" counts are exactly EXPECT's.
check_status() {
	python3 - "$WORK/status" "$@" <<'EOF'
import json, sys
objs = {}
for i, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    if line.strip():
        try:
            o = json.loads(line)
        except ValueError as e:
            sys.exit("status line %d is not JSON (%s): %r" % (i, e, line))
        if isinstance(o, dict) and "name" in o:
            objs[o["name"]] = o
refused, counts, shown = {}, {}, []
if sys.argv[2] != "-":
    for line in open(sys.argv[2], encoding="ascii"):
        f = line.split()
        if f and f[0] == "refused":
            refused[f[1]] = f[2].split("|")
        elif f and f[0] == "shown":
            shown.append(f[1])
            counts.setdefault(f[1], {})
        elif f and f[0] == "hiddencount":
            counts.setdefault(f[1], {})[f[2]] = int(f[3])
args = sys.argv[3:]
for name, rule in zip(args[::2], args[1::2]):
    refused[name] = rule.split("|")
bad = []
for name, rules in refused.items():
    o = objs.get(name)
    if not o or o.get("result") != "refused":
        bad.append("%s: not refused: %s" % (name, o))
    elif o.get("rule") not in rules or not o.get("reason"):
        bad.append("%s: rule %r (want %s), reason %r" % (
            name, o.get("rule"), "|".join(rules), o.get("reason")))
for name in shown:
    o = objs.get(name)
    if not o or o.get("result") != "ok":
        bad.append("%s: not ok: %s" % (name, o))
    elif o.get("hidden", {}) != counts[name]:
        bad.append("%s: hidden %s, want %s" % (name, o.get("hidden"),
                                               counts[name]))
    elif counts[name] and set(o.get("hidden_example", {})) != \
            set(counts[name]):
        bad.append("%s: hidden_example %s" % (name, o.get("hidden_example")))
if bad:
    sys.exit("status:\n  " + "\n  ".join(bad))
EOF
}
$T cat "$MNT/.ckptfs/status" >"$WORK/status" || fail "cannot read status"
out=$(check_status "$E" 2>&1) || {
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

# ---- visible and hidden names, by exact name ---------------------------------------
# Each path is looked up one component at a time from the checkpoint's
# directory (as the kernel does for a path of any length), and, when short
# enough, also opened whole as cat would.  A hidden path must give ENOENT
# (ENOTDIR below a file; ENAMETOOLONG for a component over 255 bytes).
timeout 60 python3 - "$E" "$MNT/snapshots" <<'EOF' || fail "visible/hidden names"
import codecs, errno, os, sys
exp, snap = sys.argv[1], sys.argv[2].encode()
def dec(f):
    return codecs.escape_decode(f.encode())[0]
def lookup(name, rel):
    comps = rel.split(b"/")
    assert all(c not in (b"", b".", b"..") for c in comps), rel
    fd = os.open(os.path.join(snap, name), os.O_PATH | os.O_DIRECTORY)
    try:
        for c in comps[:-1]:
            nfd = os.open(c, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW,
                          dir_fd=fd)
            os.close(fd)
            fd = nfd
        return os.lstat(comps[-1], dir_fd=fd)
    finally:
        os.close(fd)
bad = []
n = 0
for line in open(exp, encoding="ascii"):
    f = line.split()
    if len(f) < 3 or f[0] not in ("visible", "hidden"):
        continue
    name, rel = dec(f[1]), dec(f[2])
    n += 1
    try:
        lookup(name, rel)
        found = None
    except OSError as e:
        found = e.errno
    if f[0] == "visible":
        if found is not None:
            bad.append("%r: %r not visible (%s)" % (name, rel,
                                                   os.strerror(found)))
        continue
    long_ = any(len(c) > 255 for c in rel.split(b"/"))
    ok = (errno.ENOENT, errno.ENOTDIR) + ((errno.ENAMETOOLONG,) if long_
                                         else ())
    if found not in ok:
        bad.append("%r: hidden %r: %s" % (name, rel, "exists" if found is None
                                           else os.strerror(found)))
        continue
    full = os.path.join(snap, name, rel)
    if len(full) < 4000:
        try:
            os.close(os.open(full, os.O_RDONLY))
            bad.append("%r: hidden %r opens" % (name, rel))
        except OSError as e:
            if e.errno not in ok:
                bad.append("%r: open %r: %s" % (name, rel,
                                                os.strerror(e.errno)))
if bad:
    sys.exit("\n".join(bad[:40]) + "\n(%d of %d)" % (len(bad), n))
EOF

# ---- EXPECT, line by line ---------------------------------------------------------
while read -r -u 4 kind name path arg; do
	case $kind in
	file | link | mode | eio | maxbytes | dangling) ;;
	*) continue ;;
	esac
	dec "$name"
	n=$DEC
	dec "$path"
	p=$DEC
	f=$MNT/snapshots/$n/$p
	case $kind in
	file)
		if [ "${#f}" -ge 4000 ]; then
			# Deeper than PATH_MAX: one component at a time.
			got=$(timeout 30 python3 -c '
import hashlib, os, sys
fd = os.open(sys.argv[1], os.O_PATH | os.O_DIRECTORY)
comps = sys.argv[2].split("/")
for c in comps[:-1]:
    fd = os.open(c, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
fd = os.open(comps[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
print(hashlib.sha256(os.read(fd, 1 << 20)).hexdigest())
' "$MNT/snapshots/$n" "$p") || fail "$n: cannot read the ${#p}-byte path"
		else
			[ -f "$f" ] && [ ! -L "$f" ] || fail "$n: '$path' is not a file"
			got=$($T sha256sum <"$f" | cut -d' ' -f1)
		fi
		assert_eq "$arg" "$got" "$n: content of '$path'"
		;;
	link)
		[ -L "$f" ] || fail "$n: '$path' is not a symlink"
		dec "$arg"
		assert_eq "$DEC" "$(readlink "$f")" "$n: target of '$path'"
		;;
	dangling)
		[ -L "$f" ] || fail "$n: '$path' is not a symlink"
		assert_errno ENOENT cat -- "$f"
		;;
	mode)
		assert_eq "$arg" "$(stat -c %a "$f")" "$n: mode of '$path'"
		;;
	eio | maxbytes)
		rc=0
		$T cat "$f" >"$WORK/read.out" 2>"$WORK/read.err" || rc=$?
		case $rc in 124 | 137) fail "$n: reading '$path' hung" ;; esac
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

# ---- a lying local header refuses its archive once found ------------------------
poisoned=()
while read -r -u 4 kind name path rule; do
	[ "$kind" = poison ] || continue
	assert_errno EIO cat -- "$MNT/snapshots/$name/$path"
	poisoned+=("$name" "$rule")
done 4<"$E"
all_gone() {
	local i
	for ((i = 0; i < ${#poisoned[@]}; i += 2)); do
		[ ! -e "$MNT/snapshots/${poisoned[i]}" ] || return 1
	done
}
wait_for 3 all_gone || fail "an archive is still shown 3 s after EIO"
$T cat "$MNT/.ckptfs/status" >"$WORK/status" || fail "status"
out=$(check_status - "${poisoned[@]}" 2>&1) || fail "$out"

# ---- no secret byte, special file or setuid bit anywhere --------------------------
out=$($T grep -r -l -a CKPT_SECRET_MARKER "$MNT" 2>/dev/null) || true
[ -z "$out" ] || fail "hidden content readable in: $out"
out=$($T grep -R -l -a CKPT_SECRET_MARKER "$MNT" 2>/dev/null) || true
[ -z "$out" ] || fail "hidden content readable through a link in: $out"
out=$($T find "$MNT" \( -type p -o -type c -o -type b -o -type s \
	-o -perm /6000 \) -printf '%P\n') || fail "find over the mount"
[ -z "$out" ] || fail "special files or setuid/setgid bits shown: $out"
out=$($T find "$MNT/snapshots" -mindepth 2 ! -type l -perm /0222 \
	-printf '%P\n') || fail "find over snapshots/"
[ -z "$out" ] || fail "write bits shown: $out"

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
for r in $(awk '$1 == "refused" { print $2 }' "$E"); do
	grep -qF -- "checkpoint $r " "$DAEMON_LOG" ||
		fail "the log does not mention $r"
done

# ---- a hostile archive arriving while mounted is refused too --------------------------
cp "$STORE/fifield.ckpt" "$WORK/late.tmp"
mv "$WORK/late.tmp" "$STORE/late.ckpt"
late_in_status() {
	$T cat "$MNT/.ckptfs/status" >"$WORK/status" 2>/dev/null &&
		check_status - late overlap >/dev/null 2>&1
}
wait_for 3 late_in_status || fail "late.ckpt (a zip bomb) not in status in 3 s"
[ ! -e "$MNT/snapshots/late" ] || fail "late.ckpt (a zip bomb) is shown"

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

# ---- memory ----------------------------------------------------------------------------
rss_check

ckpt_umount "$MNT"
exit 0
