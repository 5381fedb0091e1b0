#!/bin/bash
# 62-agent.sh - agent and user checkpoints (-o agent_uid=UID).
#
# Mounted with allow_other,agent_uid=U (U an unused uid): a mkdir by U makes
# an "agent" checkpoint (xattr user.ckpt.origin, manifest, checkpoint.json);
# a mkdir by root or by any other uid makes a "user" one.  U may rename and
# delete agent checkpoints, its own or found in STORE, but gets EPERM for
# rmdir and mv of a user checkpoint, which stays whole; root may delete and
# rename anything.  U reads every checkpoint.  Runs as root (setpriv).
# shellcheck disable=SC2010 # ls | grep on names this test chose
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need setpriv util-linux
need getfattr attr
need ps procps
need python3 python3
# A pyenv shim costs 0.1 s a call: call the interpreter it resolves to.
PY3=$(python3 -c 'import sys; print(sys.executable)')
python3() { "$PY3" "$@"; }
[ "$(id -u)" -eq 0 ] || skip "needs root to act as another uid (setpriv)"

# Two uids that no account and no running process uses.
unused_uid() {
	local u=$1
	while getent passwd "$u" >/dev/null || getent group "$u" >/dev/null ||
		[ -n "$(ps -e -o uid= | awk -v u="$u" '$1 == u')" ] ||
		[ "$u" = "${2-}" ]; do
		u=$((u + 1))
	done
	echo "$u"
}
AUID=$(unused_uid 4242)
OUID=$(unused_uid $((AUID + 1)) "$AUID")
# "${AGENT[@]}" CMD...: run CMD as the agent, with no supplementary groups
# (an array, not a function, so that assert_errno can run it too).
AGENT=(setpriv --reuid="$AUID" --regid="$AUID" --clear-groups)
OTHER=(setpriv --reuid="$OUID" --regid="$OUID" --clear-groups)

RUN=$WORK/run
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$RUN" 2
echo '{"id": "r-62", "backend": "claude-code-v1"}' >"$RUN/run.json"
: "${CKPTFS_BACKENDS:=$SRCDIR/backends}"
export CKPTFS_BACKENDS
# Found in STORE: one user and one agent checkpoint made by another tool.
make_run "$WORK/old" 3
mkckpt "$WORK/old" "$STORE/old-user.ckpt" -n old-user -o user
mkckpt "$WORK/old" "$STORE/old-agent.ckpt" -n old-agent -o agent
# The agent must reach the mount point: mktemp made $WORK 0700.
chmod 0711 "$WORK"

ckpt_mount "$STORE" "$MNT" "source=$RUN,allow_other,agent_uid=$AUID"
chmod 0755 "$MNT" 2>/dev/null || true
"${AGENT[@]}" test -d "$MNT/snapshots" ||
	fail "uid $AUID cannot reach $MNT/snapshots (allow_other?)"
origin() {
	getfattr --absolute-names --only-values -n user.ckpt.origin \
		"$MNT/snapshots/$1" 2>/dev/null
}
manifest_origin() {
	python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["origin"])' "$MNT/snapshots/$1/manifest.json"
}
latest_origin() {
	python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
print(j["latest"], j["origin"])' "$STORE/checkpoint.json"
}

# ---- who makes what ---------------------------------------------------------------
out=$(timeout 20 "${AGENT[@]}" mkdir "$MNT/snapshots/a1" 2>&1) ||
	fail "agent mkdir a1: $out"
assert_eq agent "$(origin a1)" "user.ckpt.origin of a1 (made by the agent)"
assert_eq agent "$(manifest_origin a1)" "manifest origin of a1"
assert_eq "a1 agent" "$(latest_origin)" "checkpoint.json after a1"
timeout 20 mkdir "$MNT/snapshots/u1" || fail "root mkdir u1"
assert_eq user "$(origin u1)" "user.ckpt.origin of u1 (made by root)"
assert_eq user "$(manifest_origin u1)" "manifest origin of u1"
assert_eq "u1 user" "$(latest_origin)" "checkpoint.json after u1"
assert_eq a1 "$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["parent"])' "$MNT/snapshots/u1/manifest.json")" \
	"parent of u1"
out=$(timeout 20 "${OTHER[@]}" mkdir "$MNT/snapshots/o1" 2>&1) ||
	fail "mkdir o1 by uid $OUID: $out"
assert_eq user "$(origin o1)" "user.ckpt.origin of o1 (made by uid $OUID)"
assert_eq user "$(origin old-user)" "origin of old-user"
assert_eq agent "$(origin old-agent)" "origin of old-agent"

# ---- the agent reads everything ------------------------------------------------------
for n in a1:run u1:run old-user:old; do
	out=$("${AGENT[@]}" timeout 20 diff -r --no-dereference "$WORK/${n#*:}/world" \
		"$MNT/snapshots/${n%:*}/world" 2>&1) ||
		fail "the agent reading ${n%:*}: $out"
done
assert_eq "$(cat "$RUN/workspace/README.md")" \
	"$("${AGENT[@]}" cat "$MNT/snapshots/u1/workspace/README.md")" \
	"README.md of u1 read by the agent"

# ---- the agent cannot remove or rename a user checkpoint ---------------------------------
sha_u1=$(sha256sum <"$STORE/u1.ckpt")
for n in u1 o1 old-user; do
	assert_errno EPERM "${AGENT[@]}" rmdir "$MNT/snapshots/$n"
	assert_errno EPERM "${AGENT[@]}" mv -T "$MNT/snapshots/$n" "$MNT/snapshots/$n-x"
	[ -f "$STORE/$n.ckpt" ] && [ ! -e "$STORE/$n-x.ckpt" ] ||
		fail "STORE after the agent's refused rmdir/mv of $n: $(ls -A "$STORE")"
	[ -d "$MNT/snapshots/$n/workspace" ] ||
		fail "snapshots/$n not shown after the agent's refused rmdir/mv"
done
assert_eq "$sha_u1" "$(sha256sum <"$STORE/u1.ckpt")" "u1.ckpt after refusals"
# Nor overwrite one by renaming onto its name.
assert_errno EEXIST "${AGENT[@]}" mv -T "$MNT/snapshots/a1" "$MNT/snapshots/u1"
assert_eq "$sha_u1" "$(sha256sum <"$STORE/u1.ckpt")" "u1.ckpt after mv a1 u1"

# ---- ... but can its own ---------------------------------------------------------------
timeout 10 "${AGENT[@]}" mv -T "$MNT/snapshots/a1" "$MNT/snapshots/a2" ||
	fail "the agent cannot rename its own checkpoint a1"
[ -f "$STORE/a2.ckpt" ] && [ ! -e "$STORE/a1.ckpt" ] ||
	fail "STORE after the agent's mv a1 a2: $(ls -A "$STORE")"
wait_for 2 test -d "$MNT/snapshots/a2/workspace" || fail "a2 not shown"
assert_eq agent "$(origin a2)" "origin of a2 (renamed a1)"
timeout 10 "${AGENT[@]}" rmdir "$MNT/snapshots/a2" ||
	fail "the agent cannot delete its own a2"
[ ! -e "$STORE/a2.ckpt" ] || fail "the agent's rmdir a2 left STORE/a2.ckpt"
timeout 10 "${AGENT[@]}" rmdir "$MNT/snapshots/old-agent" ||
	fail "the agent cannot delete old-agent (an agent checkpoint in STORE)"
[ ! -e "$STORE/old-agent.ckpt" ] || fail "rmdir old-agent left the file"

# ---- root may do anything ----------------------------------------------------------------
"${AGENT[@]}" timeout 20 mkdir "$MNT/snapshots/a3" || fail "agent mkdir a3"
assert_eq agent "$(origin a3)" "origin of a3"
timeout 10 mv -T "$MNT/snapshots/u1" "$MNT/snapshots/u2" || fail "root mv u1 u2"
assert_eq user "$(origin u2)" "origin of u2 (renamed u1)"
timeout 10 rmdir "$MNT/snapshots/u2" "$MNT/snapshots/o1" \
	"$MNT/snapshots/old-user" "$MNT/snapshots/a3" ||
	fail "root cannot delete user and agent checkpoints"
assert_eq "" "$(ls -A "$STORE" | grep '\.ckpt$' || true)" \
	"checkpoints left in STORE after root deleted them all"
wait_for 2 test -z "$(ls -A "$MNT/snapshots")" ||
	fail "snapshots/ not empty: $(ls -A "$MNT/snapshots")"
daemon_alive
ckpt_umount "$MNT"
exit 0
