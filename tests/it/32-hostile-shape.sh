#!/bin/bash
# 32-hostile-shape.sh - hostile archives at the edges of the contract,
# written with scripts/mkhostile's writer:
#
#   max64        a zip64 size of 2^64-1 after the manifest: the declared
#                total must not wrap; refused with rule "limit".
#   deep4095     a file whose path is exactly 4095 bytes, the longest the
#                policy allows: it opens and reads, and the checkpoint stays.
#   linkesc, fifoparent, credparent   a non-directory entry that is not
#                shown (an escaping symlink, a FIFO, a credential file) with
#                entries below it: "a name cannot be both a file and the
#                parent of other entries" (ckpt(5)), so refused, "duplicate".
#   hugemf       a 30 MiB manifest served filtered, read by 4 readers at
#                once: one copy is shared, and RSS stays under 256 MiB.
. "${SRCDIR:-$(dirname "$0")/../..}/tests/it/lib.sh"
need python3 python3

STORE=$WORK/store
MNT=$WORK/mnt
mkdir -p "$STORE"
timeout 60 python3 - "$SRCDIR/scripts/mkhostile" "$STORE" <<'EOF' ||
import importlib.machinery, importlib.util, os, stat, sys
loader = importlib.machinery.SourceFileLoader("mkhostile", sys.argv[1])
spec = importlib.util.spec_from_loader("mkhostile", loader)
mk = importlib.util.module_from_spec(spec)
loader.exec_module(mk)
E, M, out = mk.Entry, mk.manifest, sys.argv[2]
def write(name, entries):
    with open(os.path.join(out, name + ".ckpt"), "wb") as f:
        f.write(mk.build([E("manifest.json", M(name))] + entries))
write("max64", [E("workspace/a", b"", usize=(1 << 64) - 1, crc=0,
                  zip64=True)])
write("deep4095", [E("workspace/" + "d/" * 2042 + "f", b"deep\n"),
                   E("workspace/ok.txt", b"ok\n")])
write("linkesc", [E("workspace/evil", "/etc", mk.S_LINK, 0),
                  E("workspace/evil/passwd", b"not the real one\n")])
write("fifoparent", [E("workspace/f", b"", stat.S_IFIFO | 0o644),
                     E("workspace/f/x", b"x\n")])
write("credparent", [E("workspace/.env", mk.secret("env")),
                     E("workspace/.env/x", b"x\n")])
EOF
	fail "writing the fixtures"
timeout 60 python3 "$SRCDIR/scripts/mkhostile" --big "$WORK/big" ||
	fail "scripts/mkhostile --big"
mkdir -p "$WORK/store2"
mv "$WORK/big/hugemf.ckpt" "$WORK/store2/"

status_of() {
	timeout -k 2 30 cat "$MNT/.ckptfs/status" | grep -F "\"name\":\"$1\"" ||
		true
}

asan_small_quarantine
ckpt_mount "$STORE" "$MNT"
S=$MNT/snapshots
errors=()
timeout -k 2 30 ls "$S" >/dev/null || fail "ls snapshots/"

line=$(status_of max64)
case $line in
*'"result":"refused"'*'"rule":"limit"'*) ;;
*) errors+=("max64: $line (want refused, limit: core/index.c)") ;;
esac

for n in linkesc fifoparent credparent; do
	line=$(status_of "$n")
	case $line in
	*'"result":"refused"'*'"rule":"duplicate"'*) ;;
	*) errors+=("$n: $line (want refused, duplicate: core/index.c)") ;;
	esac
done

got=$(timeout -k 2 30 python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_PATH)
for c in ["workspace"] + ["d"] * 2042:
    fd = os.open(c, os.O_PATH | os.O_DIRECTORY, dir_fd=fd)
try:
    print(os.read(os.open("f", os.O_RDONLY, dir_fd=fd), 100).decode(), end="")
except OSError as e:
    print(e.strerror)
' "$S/deep4095" 2>&1)
[ "$got" = deep ] ||
	errors+=("deep4095: reading the 4095-byte path: $got (core/index.c)")
sleep 0.6
[ -d "$S/deep4095" ] || errors+=("deep4095: the checkpoint vanished after \
that read; status: '$(status_of deep4095)' (core/read.c)")

daemon_alive
ckpt_umount "$MNT"

ckpt_mount "$WORK/store2" "$MNT"
timeout -k 2 30 ls "$S/hugemf" >/dev/null || fail "ls snapshots/hugemf"
before=$(daemon_hwm)
readers=()
for i in 1 2 3 4; do
	timeout -k 2 60 cat "$S/hugemf/manifest.json" >/dev/null &
	readers+=($!)
done
wait "${readers[@]}"
hwm=$(daemon_hwm)
note "4 readers of hugemf/manifest.json: peak RSS $before -> $hwm kB"
[ "$hwm" -lt "$RSS_LIMIT_KB" ] || errors+=("hugemf: 4 readers of a 30 MiB \
filtered manifest: RSS $before -> $hwm kB (core/read.c, core/index.c)")

daemon_alive
ckpt_umount "$MNT"
if [ ${#errors[@]} -gt 0 ]; then
	printf '%s\n' "${errors[@]}" >&2
	fail "${#errors[@]} of 7 checks fail"
fi
exit 0
