#!/bin/bash
# 64-periodic.sh - every=S takes automatic checkpoints, keep=N prunes them.
#
# With every=1,keep=2 and a tiny, changing source: within 6 s at least 3
# auto-YYYYMMDDTHHMMSSZ checkpoints are made (UTC, near now, origin
# "auto", in the status file and checkpoint.json); at any time at most
# keep automatic ones remain, besides the latest and the parent of a user
# checkpoint, and those that remain are the newest; a user checkpoint made
# meanwhile is never pruned, nor its parent.  STORE holds exactly what
# snapshots/ shows.  keep= without every= fails the mount.
# shellcheck disable=SC2010 # ls | grep on names this test chose
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need python3 python3
# A pyenv shim costs 0.1 s a call: call the interpreter it resolves to.
PY3=$(python3 -c 'import sys; print(sys.executable)')
python3() { "$PY3" "$@"; }
: "${CKPTFS_BACKENDS:=$SRCDIR/backends}"
export CKPTFS_BACKENDS

RUN=$WORK/run
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE" "$RUN/world" "$RUN/workspace"
echo '{"world": 0}' >"$RUN/world/w.json"
echo 'tiny' >"$RUN/workspace/a.txt"

# ---- keep= alone is refused -------------------------------------------------------
rc=0
out=$(timeout -k 2 10 "$CKPTFS" "$STORE" "$MNT" -f -o "source=$RUN,keep=2" \
	2>&1 </dev/null) || rc=$?
if is_mounted "$MNT"; then
	fusermount3 -u -z "$MNT"
	fail "ckptfs mounted with keep= and no every="
fi
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ -n "$out" ] ||
	fail "keep= without every=: status $rc, message '$out'"

# ---- every=1,keep=2 ----------------------------------------------------------------
start=$(date -u +%s)
ckpt_mount "$STORE" "$MNT" "source=$RUN,every=1,keep=2"
# made: the automatic saves that the status file reports as done.
made() {
	timeout 5 cat "$MNT/.ckptfs/status" 2>/dev/null | python3 -c '
import json, sys
names = set()
for l in sys.stdin:
    l = l.strip()
    if l:
        o = json.loads(l)
        if o.get("save", "").startswith("auto-") and o.get("result") == "ok":
            names.add(o["save"])
print(len(names))'
}
autos() { ls -A "$MNT/snapshots" | grep '^auto-' || true; }
# check_retention: at most keep=2 automatic checkpoints besides the latest
# (the newest) and the user checkpoint's parent, which must stay.
PARENT=
check_retention() {
	local a n
	a=$(autos)
	n=$(grep -vx -e "${PARENT:-//}" <<<"$a" | grep -c . || true)
	[ "$n" -le 3 ] ||
		fail "keep=2: $n automatic checkpoints besides u1's parent" \
			"(${PARENT:-none}): $(echo $a)"
	[ -z "$PARENT" ] || grep -qx "$PARENT" <<<"$a" ||
		fail "keep=2 pruned $PARENT, the parent of the user checkpoint u1"
}
u1_made=
deadline=$((SECONDS + 6))
i=0
while [ "$SECONDS" -lt "$deadline" ]; do
	i=$((i + 1))
	echo "change $i" >"$RUN/workspace/a.txt"
	if [ -z "$u1_made" ] && [ -n "$(autos)" ]; then
		timeout 20 mkdir "$MNT/snapshots/u1" || fail "mkdir u1 meanwhile"
		u1_made=1
		PARENT=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["parent"] or "")' \
			"$MNT/snapshots/u1/manifest.json")
		note "u1's parent: ${PARENT:-none}"
	fi
	check_retention
	[ "$(made)" -ge 3 ] && [ -n "$u1_made" ] && break
	sleep 0.3
done
n=$(made)
[ "$n" -ge 3 ] ||
	fail "every=1: $n automatic checkpoints made within 6 s; expected >= 3"
[ -n "$u1_made" ] || fail "no automatic checkpoint appeared to make u1 after"
# Let pruning run past a few more saves: u1 and its parent must stay.
sleep 2.2
check_retention
[ -d "$MNT/snapshots/u1/workspace" ] || fail "keep=2 pruned the user checkpoint u1"
[ "$(made)" -ge 5 ] || fail "every=1: only $(made) automatic saves in ~8 s"

LOG=$DAEMON_LOG
ckpt_umount "$MNT"

# ---- what is left, read from STORE once nothing runs any more ---------------------
# Only checkpoints and the pointer: no temporary file, nothing else.
bad=$(ls -A "$STORE" | grep -vE '^(auto-[0-9]{8}T[0-9]{6}Z|u1)\.ckpt$|^checkpoint\.json$' || true)
assert_eq "" "$bad" "unexpected files in STORE"
[ -f "$STORE/u1.ckpt" ] || fail "STORE lost u1.ckpt"
[ -z "$PARENT" ] || [ -f "$STORE/$PARENT.ckpt" ] ||
	fail "STORE lost $PARENT.ckpt, u1's parent"
# Names (UTC, between the mount and now), origins, the pointer, and
# retention: the automatic checkpoints left, u1's parent aside, are at most
# 3 (keep=2 and the latest) and the newest of those the log says were made.
python3 - "$STORE" "$LOG" "$PARENT" "$start" "$(date -u +%s)" <<'EOF' ||
import calendar, json, os, re, sys, time, zipfile
store, log, parent, start, now = sys.argv[1:4] + [int(x) for x in sys.argv[4:6]]
def manifest(name):
    with zipfile.ZipFile(os.path.join(store, name + ".ckpt")) as z:
        return json.loads(z.read("manifest.json"))
made = sorted(set(re.findall(r"saved (auto-\d{8}T\d{6}Z)", open(log).read())))
left = sorted(f[:-5] for f in os.listdir(store)
              if f.startswith("auto-") and f.endswith(".ckpt"))
for a in left:
    t = calendar.timegm(time.strptime(a, "auto-%Y%m%dT%H%M%SZ"))
    assert start - 1 <= t <= now + 1, "%s is not between the mount and now" % a
    m = manifest(a)
    assert m["origin"] == "auto" and m["name"] == a, (a, m["origin"], m["name"])
u1 = manifest("u1")
assert u1["origin"] == "user", "origin of u1: %r" % u1["origin"]
assert (u1["parent"] or "") == parent, (u1["parent"], parent)
rest = [a for a in left if a != parent]
assert len(rest) <= 3, "keep=2: %d left besides u1's parent: %s" % (len(rest), rest)
assert set(rest) <= set(made[-3:]), "kept %s, not the newest of %s" % (rest, made)
c = json.load(open(os.path.join(store, "checkpoint.json")))
newest = max(left + ["u1"], key=lambda n: manifest(n)["created"])
assert c["latest"] == newest, "checkpoint.json names %s, newest is %s" % (
    c["latest"], newest)
assert c["file"] == c["latest"] + ".ckpt", c
assert c["origin"] == ("user" if c["latest"] == "u1" else "auto"), c
EOF
	fail "what every=1,keep=2 left in STORE (above)"
exit 0
