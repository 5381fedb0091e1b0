#!/bin/bash
# 31-hostile-big.sh - the big hostile archives (scripts/mkhostile --big),
# next to good checkpoints: a 4 GiB deflate bomb, 200,000 entries with a
# 21 MiB manifest, and a 30 MiB manifest served filtered.
#
# Checked: all three are shown with exactly what EXPECT says; the bomb has
# its exact size, reads zeros, and its last bytes come back (after the
# daemon inflated all 4 GiB and checked the CRC) in bounded time, and no
# read passes the real size; all 200,000 files are listed and read; the
# filtered manifest is valid JSON without the hidden record; under
# max_entries, max_manifest_mb, max_ratio and max_entry_mb the same
# archives are refused or hidden, with rule "limit"; the good checkpoints
# stay diff-clean; every daemon's RSS stays under 256 MiB throughout.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need python3 python3

STORE=$WORK/store
MNT=$WORK/mnt
E=$STORE/EXPECT
timeout 60 python3 "$SRCDIR/scripts/mkhostile" --big "$STORE" ||
	fail "scripts/mkhostile --big $STORE"
for g in 1 2; do
	make_run "$WORK/good$g" "$g"
	mkckpt "$WORK/good$g" "$STORE/good$g.ckpt" -n "good$g" -o user
done
big() { awk -v n="$1" -v k="$2" '$1 == "big" && $2 == n && $3 == k {
	print $4 }' "$E"; }

# mount_sampled [OPTS]: mounts STORE on MNT and starts sampling the
# daemon's RSS.
mount_sampled() {
	ckpt_mount "$STORE" "$MNT" "${1-}"
	rss_watch
}

# umount_checked: the peak RSS of the daemon, then unmount.
umount_checked() {
	rss_check "${1-}"
	ckpt_umount "$MNT"
}

# status_is NAME RESULT [RULE [COUNT]]: the status line of NAME says
# RESULT; refused with RULE, or ok with COUNT entries hidden by RULE and
# nothing else hidden (RULE "-": nothing hidden).
status_is() {
	timeout -k 2 30 cat "$MNT/.ckptfs/status" >"$WORK/status" ||
		fail "cannot read status"
	python3 - "$WORK/status" "$@" <<'EOF' || fail "status of $1"
import json, sys
objs = {}
for line in open(sys.argv[1], encoding="utf-8"):
    o = json.loads(line)
    if "name" in o:
        objs[o["name"]] = o
name, result = sys.argv[2], sys.argv[3]
rule = sys.argv[4] if len(sys.argv) > 4 else None
o = objs.get(name) or sys.exit("no status line for %s" % name)
if o.get("result") != result:
    sys.exit("%s: %s, want %s" % (name, o, result))
if result == "refused" and (o.get("rule") != rule or not o.get("reason")):
    sys.exit("%s: %s, want rule %s and a reason" % (name, o, rule))
if result == "ok" and rule:
    want = {rule: int(sys.argv[5])} if rule != "-" else {}
    if o.get("hidden") != want:
        sys.exit("%s: hidden %s, want %s" % (name, o.get("hidden"), want))
EOF
}

asan_small_quarantine
mount_sampled
S=$MNT/snapshots
# Indexing 200,000 entries and two big manifests, bounded.
got=$(timeout -k 2 60 ls "$S") || fail "ls snapshots/ failed or hung"
assert_eq "$(printf '%s\n' bomb good1 good2 hugemf many)" "$got" "snapshots/"
counted=$(awk '$1 == "hiddencount" { print $2 }' "$E")
while read -r kind name rule n; do
	case $kind in
	shown)
		grep -qxF "$name" <<<"$counted" || status_is "$name" ok -
		;;
	hiddencount) status_is "$name" ok "$rule" "$n" ;;
	esac
done <"$E"
while read -r kind name path sum; do
	case $kind in
	file)
		got=$(timeout -k 2 10 sha256sum <"$S/$name/$path" | cut -d' ' -f1)
		assert_eq "$sum" "$got" "$name: content of $path"
		;;
	hidden) assert_errno ENOENT cat "$S/$name/$path" ;;
	esac
done <"$E"

# ---- the bomb: exact size, zeros, the end in bounded time ---------------------
Z=$S/bomb/workspace/zeros.bin
size=$(big bomb size)
assert_eq "$size" "$(stat -c %s "$Z")" "size of the bomb"
timeout -k 2 30 head -c $((64 << 20)) "$Z" >"$WORK/head" ||
	fail "reading 64 MiB of the bomb failed or hung"
assert_eq $((64 << 20)) "$(stat -c %s "$WORK/head")" "bytes read"
cmp -s -n $((64 << 20)) "$WORK/head" /dev/zero || fail "the bomb is not zeros"
rm -f "$WORK/head"
# The last 4 KiB, asking for 8: the daemon inflates all of it to get there
# and checks the CRC before answering; nothing comes after the real end.
t0=$SECONDS
rc=0
timeout -k 2 60 dd if="$Z" bs=4096 skip=$((size / 4096 - 1)) count=2 \
	status=none >"$WORK/tail" 2>"$WORK/tail.err" || rc=$?
case $rc in 124 | 137) fail "reading the end of the bomb took over 60 s" ;; esac
[ "$rc" -eq 0 ] || fail "reading the end of the bomb: $(cat "$WORK/tail.err")"
note "the last 4 KiB of a $size-byte bomb in $((SECONDS - t0)) s"
assert_eq 4096 "$(stat -c %s "$WORK/tail")" "bytes at the end of the bomb"
cmp -s -n 4096 "$WORK/tail" /dev/zero || fail "the end of the bomb is not zeros"
got=$(timeout -k 2 10 dd if="$Z" bs=4096 skip=$((size / 4096)) count=1 \
	status=none | wc -c) || fail "reading at the end of the bomb"
assert_eq 0 "$got" "bytes past the end of the bomb"

# ---- 200,000 entries ----------------------------------------------------------
timeout -k 2 60 find "$S/many" -mindepth 1 -printf '%y %P\n' >"$WORK/many" ||
	fail "find snapshots/many failed or hung"
assert_eq "$(big many files)" "$(grep -c '^f workspace/d[0-9]*/f' "$WORK/many")" \
	"files in many"
assert_eq "$(big many dirs)" "$(grep -c '^d workspace/d[0-9]*$' "$WORK/many")" \
	"directories in many"
assert_eq $(($(big many files) + $(big many dirs) + 2)) "$(wc -l <"$WORK/many")" \
	"names in many"
# Whole directories read (reading all 200,000 files would take 15 s): each
# file holds its number.
for d in d000 d199 d399; do
	n=${d#d}
	n=$((10#$n * 500))
	(cd "$S/many/workspace/$d" && timeout -k 2 60 cat -- *) |
		python3 -c '
import sys
first = int(sys.argv[1])
got = [int(x) for x in sys.stdin.read().split()]
sys.exit(0 if got == list(range(first, first + 500)) else "contents")
' "$n" || fail "the files of many/workspace/$d"
done
assert_eq "$(big many manifest)" "$(stat -c %s "$S/many/manifest.json")" \
	"size of many/manifest.json"
timeout -k 2 30 python3 -c '
import json, sys
m = json.load(open(sys.argv[1], "rb"))
sys.exit(0 if len(m["entries"]) == int(sys.argv[2]) else "records")
' "$S/many/manifest.json" "$(big many files)" ||
	fail "many/manifest.json is not its manifest"

# ---- a 30 MiB manifest, served without the hidden entry's record ----------------
timeout -k 2 30 python3 -c '
import json, os, sys
path = sys.argv[1]
data = open(path, "rb").read()
if len(data) != os.stat(path).st_size:
    sys.exit("read %d bytes, stat says %d" % (len(data), os.stat(path).st_size))
m = json.loads(data)
paths = [r["path"] for r in m["entries"]]
if paths != ["workspace/a.txt"] or len(m["zzz_padding"]) != 30 << 20:
    sys.exit("served manifest: %s" % paths)
' "$S/hugemf/manifest.json" || fail "hugemf/manifest.json"

# ---- the good checkpoints are intact --------------------------------------------
for g in 1 2; do
	out=$(timeout -k 2 30 diff -r --no-dereference "$WORK/good$g" "$S/good$g" \
		-x manifest.json 2>&1) || fail "good$g: $out"
done
daemon_alive
umount_checked

# ---- the same archives under tighter limits ---------------------------------------
mount_sampled max_entries=100000,max_manifest_mb=16,max_ratio=1000
got=$(timeout -k 2 60 ls "$S") || fail "ls snapshots/ failed or hung"
assert_eq "$(printf '%s\n' bomb good1 good2)" "$got" "snapshots/ with limits"
status_is many refused limit
status_is hugemf refused limit
status_is bomb ok limit 1
assert_errno ENOENT stat "$S/bomb/workspace/zeros.bin"
umount_checked "max_entries, max_manifest_mb, max_ratio"

mount_sampled max_entry_mb=4096
status_is bomb ok limit 1
assert_errno ENOENT stat "$S/bomb/workspace/zeros.bin"
umount_checked "max_entry_mb"
exit 0
