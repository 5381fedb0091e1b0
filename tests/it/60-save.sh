#!/bin/bash
# 60-save.sh - mkdir snapshots/NEW saves the live source, and only what it
# should.
#
# A realistic run (artifacts, credential files, a FIFO, escaping links, a
# ~/.claude-like session, run.json naming claude-code-v1, exclude_from):
# every tier of the new checkpoint equals the source less exactly the
# exclusions (diff -r against a tree built with rsync --exclude); modes and
# mtimes kept; manifest run/origin/parent/scan_rules; checkpoint.json; the
# status line; a transcript stored up to its last newline.  Refusals
# (EEXIST, EINVAL, ENAMETOOLONG, EROFS with -o ro and with no source) leave
# nothing in STORE and explain themselves in .ckptfs/errors/NAME.  Bad
# mount options fail the mount.  Incremental saves copy exactly the
# unchanged files (also on a 10,000-file workspace) and never a changed
# one (content, same-size rewrite, chmod); parallel mkdirs; rmdir and mv
# (EEXIST, EXDEV).  No backend, or workspace_only: no session tier;
# codex-v1 takes only the rollouts.
# shellcheck disable=SC2010 # ls | grep on names this test chose
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need rsync rsync
need python3 python3
# A pyenv shim costs 0.1 s a call: call the interpreter it resolves to.
PY3=$(python3 -c 'import sys; print(sys.executable)')
python3() { "$PY3" "$@"; }
: "${CKPTFS_BACKENDS:=$SRCDIR/backends}"
export CKPTFS_BACKENDS

RUN=$WORK/run
W=$RUN/workspace
SE=$RUN/session
STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
make_run "$RUN" 1

# ---- the source ---------------------------------------------------------------
# Reconstructable artifacts: left out of the workspace wherever they are.
mkdir -p "$W/node_modules/pkg" "$W/web/node_modules/lib" "$W/.venv/lib" \
	"$W/venv/bin" "$W/src/__pycache__" "$W/keep/venv" "$W/.cache/pip" \
	"$W/.pytest_cache/v" "$W/.mypy_cache/3.11" "$W/.ruff_cache/0.4" \
	"$W/.tox/py311" "$W/build" "$W/app" "$W/.aws" "$W/.vscode"
echo 'module.exports = 1;' >"$W/node_modules/x.js"
echo '{"name": "pkg"}' >"$W/node_modules/pkg/package.json"
echo 'exports.lib = 2;' >"$W/web/node_modules/lib/index.js"
echo 'home = /usr/bin' >"$W/.venv/pyvenv.cfg"
echo 'import os' >"$W/.venv/lib/site.py"
echo 'home = /usr/bin' >"$W/venv/pyvenv.cfg"
printf '#!/bin/sh\n' >"$W/venv/bin/python"
printf '\0\1\2pyc' >"$W/src/__pycache__/a.cpython-311.pyc"
echo 'a folder named venv that is not a virtualenv' >"$W/keep/venv/notes.txt"
echo 'cached' >"$W/.cache/pip/x"
echo 'v' >"$W/.pytest_cache/v/lastfailed"
echo '{}' >"$W/.mypy_cache/3.11/m.json"
echo 'r' >"$W/.ruff_cache/0.4/r"
echo 't' >"$W/.tox/py311/t"
# exclude_from patterns.
echo 'object' >"$W/build/out.o"
echo 'log line' >"$W/app/run.log"
# Credential files (harmless content: the name alone keeps them out).
echo 'DEBUG=1' >"$W/.env"
echo 'X=1' >"$W/.env.local"
echo '{}' >"$W/app/.credentials.json"
echo '{}' >"$W/app/.Credentials.JSON"
echo 'not really a key' >"$W/id_rsa"
echo '[default]' >"$W/.aws/credentials"
echo 'region notes' >"$W/.aws/notes.txt"
echo '{}' >"$W/.vscode/settings.json"
echo '{"recommendations": []}' >"$W/.vscode/extensions.json"
echo 'app' >"$W/app/main.py"
# Special files and links that leave the tier.
mkfifo "$W/fifo"
echo 'outside' >"$RUN/outside.txt"
ln -s ../outside.txt "$W/escape"
ln -s /etc/hostname "$W/abs-link"
ln -s ../../../etc "$W/src/up"
# The world: stored as given (artifact names too), less policy and excludes.
mkdir -p "$RUN/world/node_modules" "$RUN/world/__pycache__"
echo 'world js' >"$RUN/world/node_modules/w.js"
echo 'world pyc' >"$RUN/world/__pycache__/w.pyc"
echo 'state' >"$RUN/world/.hidden-state"
echo 'SECRET_FREE=1' >"$RUN/world/.env"
echo 'world log' >"$RUN/world/w.log"
# The session: a ~/.claude-like tree; only the allowlist is taken.
mkdir -p "$SE/projects/-p/abc/subagents" "$SE/statsig" "$SE/shell-snapshots" \
	"$SE/todos" "$SE/ide" "$SE/plugins/x"
{
	echo '{"type":"user","message":"one"}'
	echo '{"type":"assistant","message":"two"}'
} >"$SE/projects/-p/abc.jsonl"
{
	echo '{"type":"user","message":"first"}'
	echo '{"type":"assistant","message":"second"}'
	printf '{"type":"assistant","message":"half a li'
} >"$SE/projects/-p/partial.jsonl"
echo '{"type":"agent","message":"sub"}' >"$SE/projects/-p/abc/subagents/a1.jsonl"
echo 'not a transcript' >"$SE/projects/-p/notes.txt"
echo '{"stable_id": "x"}' >"$SE/statsig/x"
printf 'export PATH=/usr/bin\n' >"$SE/shell-snapshots/s.sh"
echo '[{"content": "todo", "status": "pending"}]' >"$SE/todos/t.json"
echo '{}' >"$SE/todos/.credentials.json"
echo '{"permissions": {"allow": ["Bash"]}}' >"$SE/settings.json"
echo '{}' >"$SE/.credentials.json"
echo '{"display": "old prompt"}' >"$SE/history.jsonl"
echo 'lock' >"$SE/ide/1.lock"
echo 'plugin' >"$SE/plugins/x/p.js"
cat >"$RUN/run.json" <<'EOF'
{"id": "r-17", "step": 120, "elapsed_seconds": 5400.5, "backend": "claude-code-v1"}
EOF
EXCL=$WORK/exclude
printf '# test excludes\n*.log\nworkspace/build/\n' >"$EXCL"

# ---- the expected tree: the source less exactly the exclusions ---------------
EXP=$WORK/exp
mkdir -p "$EXP"
rsync -a --no-specials --no-devices \
	--exclude=node_modules/ --exclude=.venv/ --exclude=__pycache__/ \
	--exclude=.cache/ --exclude=.pytest_cache/ --exclude=.mypy_cache/ \
	--exclude=.ruff_cache/ --exclude=.tox/ --exclude=/venv/ \
	--exclude=/build/ --exclude='*.log' \
	--exclude=.env --exclude='.env.*' --exclude=.credentials.json \
	--exclude=.Credentials.JSON --exclude=id_rsa --exclude=/.aws/credentials \
	--exclude=/.vscode/settings.json \
	--exclude=/fifo --exclude=/escape --exclude=/abs-link --exclude=/src/up \
	"$W/" "$EXP/workspace/"
rsync -a --exclude='*.log' --exclude=.env "$RUN/world/" "$EXP/world/"
rsync -a -m --exclude=.credentials.json \
	--include='projects/' --include='projects/*/' \
	--include='projects/*/*.jsonl' --include='projects/*/*/' \
	--include='projects/*/*/subagents/' \
	--include='projects/*/*/subagents/*.jsonl' \
	--include='todos/' --include='todos/*.json' --exclude='*' \
	"$SE/" "$EXP/session/"
# A transcript is stored up to its last complete line.
P=projects/-p/partial.jsonl
head -n 2 "$SE/$P" >"$EXP/session/$P"
touch -r "$SE/$P" "$EXP/session/$P"
[ -e "$EXP/session/projects/-p/abc/subagents/a1.jsonl" ] &&
	[ ! -e "$EXP/session/statsig" ] && [ ! -e "$EXP/workspace/venv" ] &&
	[ -e "$EXP/workspace/keep/venv/notes.txt" ] ||
	fail "the test's own expected tree is wrong"

# ---- helpers ----------------------------------------------------------------
# store_state: what STORE holds (names, and the pointer's content).
store_state() {
	ls -A "$STORE"
	cat "$STORE/checkpoint.json" 2>/dev/null || true
}
# jfield FILE EXPR: a Python expression over j, the JSON in FILE.
jfield() {
	python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(v if isinstance(v, str) else json.dumps(v))' "$1" "$2"
}
# save_line MNT NAME: the last status line of a save of NAME (JSON).
save_line() {
	python3 - "$1/.ckptfs/status" "$2" <<'EOF'
import json, sys
last = None
for l in open(sys.argv[1]):
    l = l.strip()
    if l:
        o = json.loads(l)
        if o.get("save") == sys.argv[2]:
            last = o
if last is None:
    sys.exit("no status line for the save of " + sys.argv[2])
keys = ["save", "time", "result", "files_done", "files_total", "bytes_done",
        "bytes_total", "files_copied", "skipped", "duration"]
miss = [k for k in keys if k not in last]
if miss:
    sys.exit("status line %s lacks %s" % (json.dumps(last), miss))
for k in keys[3:]:
    if isinstance(last[k], float) and last[k].is_integer() and k != "duration":
        last[k] = int(last[k])
print(json.dumps(last))
EOF
}
# save_get MNT NAME KEY: one field of that line.
save_get() {
	local l
	l=$(save_line "$1" "$2") || fail "status: $l"
	python3 -c 'import json, sys
v = json.loads(sys.argv[1])[sys.argv[2]]
print(v if isinstance(v, str) else json.dumps(v))' "$l" "$3"
}
# refused ERRNO CODE MNT NAME: mkdir is refused with ERRNO, STORE is
# unchanged, and errors/NAME gives CODE, NAME, a reason and a fix.
refused() {
	local before e
	before=$(store_state)
	assert_errno "$1" mkdir "$3/snapshots/$4"
	assert_eq "$before" "$(store_state)" "STORE after the refused mkdir $4"
	e=$3/.ckptfs/errors/$4
	timeout 5 cat "$e" >"$WORK/err.json" 2>/dev/null ||
		fail "no .ckptfs/errors/$4 after mkdir was refused with $1"
	assert_eq "$2" "$(jfield "$WORK/err.json" 'j["code"]')" "code in errors/$4"
	assert_eq "$4" "$(jfield "$WORK/err.json" 'j["name"]')" "name in errors/$4"
	for k in reason fix; do
		[ -n "$(jfield "$WORK/err.json" "j.get('$k') or ''")" ] ||
			fail "errors/$4 has no $k: $(cat "$WORK/err.json")"
	done
}

# ---- bad options fail the mount at once -------------------------------------
BADMNT=$WORK/badmnt
mkdir -p "$BADMNT"
# bad_mount OPTS: the daemon must exit non-zero within 5 s, saying why on
# stderr, without mounting.
bad_mount() {
	local pid rc=0 i
	"$CKPTFS" "$STORE" "$BADMNT" -f -o "$1" </dev/null >"$WORK/bad.out" \
		2>"$WORK/bad.err" &
	pid=$!
	track_pid "$pid"
	for ((i = 0; i < 100; i++)); do
		pid_alive "$pid" || break
		is_mounted "$BADMNT" && break
		sleep 0.05
	done
	if is_mounted "$BADMNT" || pid_alive "$pid"; then
		fusermount3 -u -z "$BADMNT" 2>/dev/null
		kill "$pid" 2>/dev/null
		fail "ckptfs -o $1 did not fail at once (it mounted or kept running)"
	fi
	wait "$pid" || rc=$?
	_untrack "$pid" # reaped: its number may be reused
	[ "$rc" -ne 0 ] || fail "ckptfs -o $1 exited with status 0"
	[ -s "$WORK/bad.err" ] || fail "ckptfs -o $1 failed without a message"
}
printf '[[:alpha:]]*.txt\n' >"$WORK/bad-exclude"
bad_mount "source=$WORK/nonexistent"
bad_mount "source=$RUN,backend=no-such-backend"
bad_mount "source=$RUN,exclude_from=$WORK/bad-exclude"
bad_mount "source=$RUN,exclude_from=$WORK/nonexistent"
bad_mount "source=$RUN,keep=2"
assert_eq "" "$(ls -A "$STORE")" "STORE after the refused mounts"

# ---- the first save ---------------------------------------------------------
ckpt_mount "$STORE" "$MNT" "source=$RUN,exclude_from=$EXCL"
MAIN_PID=$DAEMON_PID
timeout 20 mkdir "$MNT/snapshots/s1" || fail "mkdir snapshots/s1 failed"
assert_eq "checkpoint.json
s1.ckpt" "$(ls -A "$STORE")" "STORE after the first save"
S=$MNT/snapshots/s1
[ -d "$S" ] || fail "snapshots/s1 is not browsable after mkdir returned"
assert_eq snapshots/s1 "$(readlink "$MNT/latest")" "latest after the save"
assert_eq "manifest.json
session
workspace
world" "$(ls -A "$S")" "the new checkpoint's directory"
for tier in world workspace session; do
	out=$(timeout 20 diff -r --no-dereference "$EXP/$tier" "$S/$tier" 2>&1) ||
		fail "$tier differs from the source less the exclusions: $out"
done
cmp -s "$EXP/session/$P" "$S/session/$P" ||
	fail "$P not stored up to its last complete line"
for tier in world workspace session; do
	assert_eq "$(tree_listing "$EXP/$tier")" \
		"$(find "$S/$tier" -mindepth 1 -printf '%P %y %m\n' | LC_ALL=C sort)" \
		"modes in $tier (path type mode)"
done
# mtimes to the nanosecond, as recorded from the source: files and links
# everywhere, directories where the source has them (the session's are
# implied by the allowlist).
# mtimes_of TREE SRC TYPES: "path mtime_ns" for every entry of TREE of one
# of TYPES (f, l, d), its time taken from the same path under SRC.
mtimes_of() {
	python3 - "$@" <<'EOF'
import os, stat, sys
tree, src, types = sys.argv[1], sys.argv[2], sys.argv[3]
kind = {"f": stat.S_ISREG, "l": stat.S_ISLNK, "d": stat.S_ISDIR}
for d, dirs, files in os.walk(tree):
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        rel = os.path.relpath(p, tree)
        if any(kind[t](os.lstat(p).st_mode) for t in types):
            print(rel, os.lstat(os.path.join(src, rel)).st_mtime_ns)
EOF
}
for tier in world workspace session; do
	types=fld
	[ "$tier" = session ] && types=f
	want=$(mtimes_of "$EXP/$tier" "$RUN/$tier" "$types" | LC_ALL=C sort)
	got=$(mtimes_of "$S/$tier" "$S/$tier" "$types" | LC_ALL=C sort)
	assert_eq "$want" "$got" "mtimes (ns) of types $types in $tier"
done
python3 - "$S/manifest.json" "$RUN/run.json" <<'EOF' || fail "manifest of s1"
import json, sys
m = json.load(open(sys.argv[1]))
run = json.load(open(sys.argv[2]))
assert m["format"] == "ckpt" and m["version"] == 1, m["format"]
assert m["name"] == "s1", m["name"]
assert m["origin"] == "user", "origin %r" % m["origin"]
assert "parent" in m and m["parent"] is None, "parent %r" % m.get("parent")
assert m.get("run") == run, "run %r, run.json %r" % (m.get("run"), run)
assert m.get("scan_rules"), "no scan_rules"
paths = [e["path"] for e in m["entries"]]
assert paths == sorted(paths), "entries not sorted by path"
bad = [p for p in paths if any(x in p.split("/") for x in (
    "node_modules", ".venv", "__pycache__", "fifo", ".env", "escape",
    "statsig", "settings.json", ".credentials.json", "id_rsa"))
    and not p.startswith("world/")]
assert not bad, "excluded entries recorded: %r" % bad
EOF
python3 - "$STORE/checkpoint.json" <<'EOF' || fail "STORE/checkpoint.json"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["latest"] == "s1" and c["file"] == "s1.ckpt", c
assert c["origin"] == "user" and c.get("created"), c
EOF
assert_eq ok "$(save_get "$MNT" s1 result)" "status result of s1"
assert_eq "$(save_get "$MNT" s1 files_total)" \
	"$(save_get "$MNT" s1 files_done)" "files_done of s1"
assert_eq 0 "$(save_get "$MNT" s1 files_copied)" "files_copied of s1"
skipped=$(save_get "$MNT" s1 skipped)
[ "$skipped" -ge 4 ] ||
	fail "status of s1: skipped $skipped, expected >= 4 (fifo, 3 links)"

# ---- refusals ---------------------------------------------------------------
# A taken name: the kernel answers EEXIST from its lookup before the daemon
# is asked, so there is no errors/ report to require here.
before=$(store_state)
assert_errno EEXIST mkdir "$MNT/snapshots/s1"
assert_eq "$before" "$(store_state)" "STORE after mkdir of a taken name"
for n in .hidden -dash 'a b' 'a:b' 'a*b' 'a\b' $'caf\303\251' 'a#b' 'a~'; do
	refused EINVAL bad_name "$MNT" "$n"
done
long=$(printf 'x%.0s' $(seq 201))
refused ENAMETOOLONG name_too_long "$MNT" "$long"
refused ENAMETOOLONG name_too_long "$MNT" "${long}${long:0:54}"
assert_errno ENAMETOOLONG mkdir "$MNT/snapshots/${long}${long:0:55}"
# The edges that are allowed: 200 characters, every allowed character.
n200=${long:0:200}
timeout 20 mkdir "$MNT/snapshots/$n200" || fail "a 200-character name refused"
timeout 20 mkdir "$MNT/snapshots/Az09._+@-x" || fail "mkdir Az09._+@-x failed"
[ -f "$STORE/$n200.ckpt" ] && [ -f "$STORE/Az09._+@-x.ckpt" ] ||
	fail "STORE lacks the checkpoints with edge names: $(ls -A "$STORE")"
timeout 10 rmdir "$MNT/snapshots/$n200" "$MNT/snapshots/Az09._+@-x" ||
	fail "rmdir of the edge names"

# ---- rmdir and mv -------------------------------------------------------------
timeout 20 mkdir "$MNT/snapshots/t1" "$MNT/snapshots/t2" || fail "mkdir t1 t2"
timeout 10 rmdir "$MNT/snapshots/t1" || fail "rmdir snapshots/t1 (not empty)"
[ ! -e "$STORE/t1.ckpt" ] || fail "rmdir left STORE/t1.ckpt"
wait_for 2 test ! -e "$MNT/snapshots/t1" || fail "t1 still shown after rmdir"
timeout 10 mv "$MNT/snapshots/t2" "$MNT/snapshots/t3" || fail "mv t2 t3"
[ -f "$STORE/t3.ckpt" ] && [ ! -e "$STORE/t2.ckpt" ] ||
	fail "mv t2 t3: STORE holds $(ls -A "$STORE" | tr '\n' ' ')"
[ -d "$MNT/snapshots/t3/workspace" ] || fail "snapshots/t3 not browsable"
assert_errno EEXIST mv -T "$MNT/snapshots/t3" "$MNT/snapshots/s1"
RENAME=(python3 -c 'import os, sys; os.rename(sys.argv[1], sys.argv[2])')
assert_errno EXDEV "${RENAME[@]}" "$MNT/snapshots/t3" "$MNT/t3"
assert_errno EXDEV "${RENAME[@]}" "$MNT/snapshots/t3" "$WORK/t3"
[ -f "$STORE/t3.ckpt" ] && [ -f "$STORE/s1.ckpt" ] ||
	fail "a refused mv changed STORE: $(ls -A "$STORE" | tr '\n' ' ')"
timeout 10 rmdir "$MNT/snapshots/t3" || fail "rmdir t3"

# ---- -o ro and no source: EROFS ------------------------------------------------
MRO=$WORK/mnt-ro
ckpt_mount "$STORE" "$MRO" "source=$RUN,ro"
# -o ro is the kernel's too: it answers EROFS without asking the daemon,
# so there is no errors/ report to require here.
before=$(store_state)
assert_errno EROFS mkdir "$MRO/snapshots/r1"
assert_eq "$before" "$(store_state)" "STORE after mkdir under -o ro"
assert_errno EROFS rmdir "$MRO/snapshots/s1"
assert_errno EROFS mv -T "$MRO/snapshots/s1" "$MRO/snapshots/s9"
[ -f "$STORE/s1.ckpt" ] || fail "STORE/s1.ckpt gone after refusals under ro"
ckpt_umount "$MRO"
# With no source the daemon itself refuses, and says why.
ckpt_mount "$STORE" "$MRO"
refused EROFS read_only "$MRO" r2
ckpt_umount "$MRO"

# ---- incremental: only what changed is read again ------------------------------
printf 'appended\n' >>"$W/README.md"                 # size and mtime
python3 - "$W/src/main.c" <<'EOF'                    # same size, new mtime
import sys
p = sys.argv[1]
b = open(p, "rb").read()
open(p, "wb").write(b.replace(b"return 1;", b"return 7;"))
EOF
chmod 0700 "$W/src/private.txt"                      # mode only
timeout 20 mkdir "$MNT/snapshots/s2" || fail "mkdir snapshots/s2 failed"
S2=$MNT/snapshots/s2
for f in README.md src/main.c; do
	cmp -s "$W/$f" "$S2/workspace/$f" ||
		fail "s2: $f does not hold its new content (copied from s1?)"
done
assert_eq 500 "$(stat -c %a "$S2/workspace/src/private.txt")" \
	"s2: mode of src/private.txt after chmod 0700 (as & 0555)"
nfiles=$(jfield "$S2/manifest.json" \
	'len([e for e in j["entries"] if e["type"] == "file"])')
copied=$(save_get "$MNT" s2 files_copied)
note "s2: $copied of $nfiles files copied from s1"
# 3 files changed; partial.jsonl may count as changed too (its stored size
# is not its size on disk).
[ "$copied" -gt 0 ] && [ "$copied" -le $((nfiles - 3)) ] &&
	[ "$copied" -ge $((nfiles - 4)) ] ||
	fail "s2: files_copied = $copied; expected $((nfiles - 4))..$((nfiles - 3))" \
		"($nfiles files, 3 changed)"
assert_eq s1 "$(jfield "$S2/manifest.json" 'j["parent"]')" "parent of s2"
for tier in world session; do
	out=$(timeout 20 diff -r --no-dereference "$EXP/$tier" "$S2/$tier" 2>&1) ||
		fail "s2: $tier: $out"
done
assert_eq s2 "$(jfield "$STORE/checkpoint.json" 'j["latest"]')" \
	"checkpoint.json after s2"

# ---- concurrent mkdirs ------------------------------------------------------------
# bgmkdir TAG NAME: mkdir in the background; status in $WORK/TAG.rc.
BG=()
bgmkdir() {
	(
		rc=0
		timeout -k 2 25 mkdir "$MNT/snapshots/$2" 2>"$WORK/$1.err" || rc=$?
		echo "$rc" >"$WORK/$1.rc"
	) &
	track_pid $!
	BG+=($!)
}
bgwait() {
	local p
	for p in "${BG[@]}"; do
		wait "$p" || true
		_untrack "$p" # reaped: its number may be reused
	done
	BG=()
}
bgmkdir c1 p1
bgmkdir c2 p2
bgwait
assert_eq "0 0" "$(cat "$WORK/c1.rc") $(cat "$WORK/c2.rc")" \
	"two parallel mkdirs of different names ($(cat "$WORK"/c[12].err))"
bgmkdir d1 q1
bgmkdir d2 q1
bgwait
rcs=$(cat "$WORK/d1.rc" "$WORK/d2.rc" | sort | tr '\n' ' ')
[ "$rcs" = "0 1 " ] ||
	fail "two parallel mkdirs of q1: statuses $rcs; expected one 0 and one 1"
grep -q 'File exists' "$WORK/d1.err" "$WORK/d2.err" ||
	fail "the losing mkdir of q1 did not get EEXIST: $(cat "$WORK"/d[12].err)"
assert_eq "checkpoint.json
p1.ckpt
p2.ckpt
q1.ckpt
s1.ckpt
s2.ckpt" "$(ls -A "$STORE")" "STORE after the parallel saves"
for n in p1 p2 q1; do
	out=$(timeout 20 diff -r --no-dereference "$EXP/world" \
		"$MNT/snapshots/$n/world" 2>&1) || fail "$n: world: $out"
done
pid_alive "$MAIN_PID" || fail "ckptfs (PID $MAIN_PID) died"
ckpt_umount "$MNT"

# ---- no backend: the session tier is not saved --------------------------------
rm "$RUN/run.json"
ckpt_mount "$STORE" "$MNT" "source=$RUN"
timeout 20 mkdir "$MNT/snapshots/nb" || fail "mkdir nb (no backend)"
assert_eq "manifest.json
workspace
world" "$(ls -A "$MNT/snapshots/nb")" "a save with no backend"
ckpt_umount "$MNT"

# ---- codex-v1 takes only the rollouts; workspace_only no session at all ---------
CX=$WORK/codex
mkdir -p "$CX/workspace" "$CX/session/sessions/2026/11/22" "$CX/session/log"
echo 'code' >"$CX/workspace/a.txt"
R=sessions/2026/11/22/rollout-2026-11-22T09-00-00-abc.jsonl
printf '{"type":"session_meta"}\n{"type":"message"}\n' >"$CX/session/$R"
echo '{"prompt": "other session"}' >"$CX/session/history.jsonl"
echo 'model = "x"' >"$CX/session/config.toml"
echo '{"token": "x"}' >"$CX/session/auth.json"
echo 'log' >"$CX/session/log/codex.log"
echo 'not a rollout' >"$CX/session/sessions/2026/11/22/notes.jsonl"
ckpt_mount "$STORE" "$MNT" "source=$CX,backend=codex-v1"
timeout 20 mkdir "$MNT/snapshots/cx" || fail "mkdir cx (codex-v1)"
assert_eq "$R" "$(cd "$MNT/snapshots/cx/session" && find . -type f | sed 's|^\./||')" \
	"session files saved by codex-v1"
cmp -s "$CX/session/$R" "$MNT/snapshots/cx/session/$R" || fail "cx: $R differs"
ckpt_umount "$MNT"
ckpt_mount "$STORE" "$MNT" "source=$CX,backend=codex-v1,workspace_only"
timeout 20 mkdir "$MNT/snapshots/wo" || fail "mkdir wo (workspace_only)"
assert_eq "manifest.json
workspace" "$(ls -A "$MNT/snapshots/wo")" "a save under workspace_only"
if grep -q '"session/' "$MNT/snapshots/wo/manifest.json"; then
	fail "a workspace_only save lists session entries"
fi
ckpt_umount "$MNT"

# ---- 10,000 files: the second save copies exactly the untouched ones ---------------
BIG=$WORK/big
python3 - "$BIG" <<'EOF'
import os, sys
root = sys.argv[1]
for d in range(100):
    p = os.path.join(root, "d%02d" % d)
    os.makedirs(p)
    for f in range(100):
        with open(os.path.join(p, "f%03d.txt" % f), "w") as h:
            h.write("file %d/%d\n" % (d, f))
EOF
STORE2=$WORK/store2
mkdir -p "$STORE2"
ckpt_mount "$STORE2" "$MNT" "workspace=$BIG"
timeout 25 mkdir "$MNT/snapshots/b1" || fail "mkdir b1 (10,000 files)"
assert_eq 10000 "$(save_get "$MNT" b1 files_total)" "files_total of b1"
touched=()
for i in 3 14 15 26 35 58 69 79 83 99; do
	touched+=("$(printf 'd%02d/f%03d.txt' "$i" $(((i * 37) % 100)))")
done
(cd "$BIG" && touch "${touched[@]}")
timeout 25 mkdir "$MNT/snapshots/b2" || fail "mkdir b2 (10,000 files)"
assert_eq 9990 "$(save_get "$MNT" b2 files_copied)" \
	"files_copied of b2 (10,000 files, 10 touched)"
assert_eq ok "$(save_get "$MNT" b2 result)" "status result of b2"
for f in "${touched[@]}"; do
	assert_eq "$(stat -c %y "$BIG/$f")" \
		"$(stat -c %y "$MNT/snapshots/b2/workspace/$f")" "mtime of $f in b2"
done
daemon_alive
ckpt_umount "$MNT"
exit 0
