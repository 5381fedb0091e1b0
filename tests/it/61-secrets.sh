#!/bin/bash
# 61-secrets.sh - a save that would write a secret is refused, and says where.
#
# For every rule of core/scan.c a fake secret of the rule's shape, generated
# here from a fixed seed (no token is written literally in this file), is
# planted in turn in a workspace file, a hidden file, the world document, an
# allowlisted transcript, run.json, a binary file, across the save's 256 KiB
# read-buffer boundary, and in a file name: mkdir gives EPERM, STORE is
# unchanged, errors/NAME names the rule, path, line and fingerprint
# (XXH3-64 of rule id, NUL, secret: checked with xxhsum) and neither it, the
# status file nor the log holds the secret.  Clean look-alikes (prose,
# UUIDs, hashes, base64 images, lock-file integrity, placeholders, the
# documentation's sample keys, public keys) are saved.  Secrets in files a
# save leaves out (node_modules, .venv, credential files, exclude_from,
# session files off the allowlist) refuse nothing.  secrets_allow with the
# reported fingerprints lets the same save through, and only those.
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
PY=$WORK/secrets.py
mkdir -p "$STORE"

# ---- the generator: fake secrets of each rule's shape, deterministic --------
cat >"$PY" <<'EOF'
"""Fake secrets for ckptfs's scan rules, and the run directory they go in.

Every token is assembled from pieces and a seeded PRNG, so that no real or
complete token is ever written in the test's source.
"""
import base64, json, os, random, string, sys

UP, LO, DIG = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UP + LO + DIG
WORD = ALNUM + "_-"
B32 = UP + "234567"
HEX = "0123456789abcdef"
BECH = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"
AZ = WORD + ".~"
B64 = ALNUM + "+/"
CHUNK = 256 * 1024


def rs(r, chars, n, need=()):
    while True:
        s = "".join(r.choice(chars) for _ in range(n))
        if all(any(c in s for c in req) for req in need) and \
                "EXAMPLE" not in s and len(set(s)) >= min(n, 20) * 2 // 3:
            return s


def b64url(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def pem(r, kind, armor=""):
    body = rs(r, B64, 256, need=(UP, LO, DIG))
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    text = ("-----" + "BEGIN " + kind + "-----\n" + armor +
            "\n".join(lines) + "\n-----" + "END " + kind + "-----")
    return text, body


def gen(rule):
    """(secret as planted, the bytes the fingerprint covers)"""
    r = random.Random("ckptfs-61:" + rule)
    simple = {
        "aws-access-key-id": lambda: "AK" + "IA" + rs(r, B32, 16),
        "github-pat-classic": lambda: "gh" + "p_" + rs(r, ALNUM, 36),
        "github-oauth": lambda: "gh" + "o_" + rs(r, ALNUM, 36),
        "github-app": lambda: "gh" + "s_" + rs(r, ALNUM, 36),
        "github-refresh": lambda: "gh" + "r_" + rs(r, ALNUM, 76),
        "github-pat-fine-grained": lambda: "github" + "_pat_" +
            rs(r, ALNUM, 22) + "_" + rs(r, ALNUM, 59),
        "gitlab-pat": lambda: "gl" + "pat-" + rs(r, ALNUM, 20),
        "anthropic-api-key": lambda: "sk-" + "ant-api03-" +
            rs(r, WORD, 93) + "AA",
        "anthropic-admin-key": lambda: "sk-" + "ant-admin01-" +
            rs(r, WORD, 93) + "AA",
        "anthropic-oauth": lambda: "sk-" + "ant-oat01-" +
            rs(r, WORD, 93) + "AA",
        "openai-api-key": lambda: "sk-" + "proj-" + rs(r, WORD, 156),
        "slack-token": lambda: "xo" + "xb-" + rs(r, DIG, 12) + "-" +
            rs(r, DIG, 13) + "-" + rs(r, ALNUM, 24),
        "stripe-secret-key": lambda: "sk" + "_live_" + rs(r, ALNUM, 34),
        "google-api-key": lambda: "AI" + "za" + rs(r, WORD, 35),
        "npm-token": lambda: "np" + "m_" + rs(r, ALNUM, 36),
        "pypi-token": lambda: "py" + "pi-" + "AgEIcHlwaS5vcmc" +
            rs(r, WORD, 70),
        "huggingface-token": lambda: "h" + "f_" +
            rs(r, UP + LO, 34, need=(UP, LO)),
        "sendgrid-api-key": lambda: "S" + "G." + rs(r, WORD, 22) + "." +
            rs(r, WORD, 43),
        "twilio-api-key": lambda: "S" + "K" +
            rs(r, HEX, 32, need=(DIG, "abcdef")),
        "digitalocean-token": lambda: "do" + "p_v1_" + rs(r, HEX, 64),
        "azure-client-secret": lambda: rs(r, ALNUM, 3) + r.choice(DIG) +
            "Q" + "~" + rs(r, AZ, 34, need=(UP, LO)),
        "hashicorp-vault-token": lambda: "hv" + "s." + rs(r, WORD, 95),
        "age-secret-key": lambda: "AGE-" + "SECRET-KEY-1" +
            rs(r, BECH, 58),
    }
    if rule in simple:
        s = simple[rule]()
        return s, s
    if rule == "aws-secret-access-key":
        v = rs(r, B64, 40, need=(UP, LO, DIG))
        return "aws_" + "secret_access_key = " + v, v
    if rule == "slack-webhook":
        tail = ("hooks" + ".slack.com/services/T" + rs(r, UP + DIG, 10) +
                "/B" + rs(r, UP + DIG, 10) + "/" + rs(r, ALNUM, 24))
        return "https://" + tail, tail
    if rule == "jwt":
        h = b64url(json.dumps({"alg": "HS256", "typ": "JWT"},
                              separators=(",", ":")).encode())
        p = b64url(json.dumps({"sub": rs(r, ALNUM, 12), "iat": 1763802000},
                              separators=(",", ":")).encode())
        s = h + "." + p + "." + rs(r, WORD, 43)
        return s, s
    kinds = {"private-key-rsa": "RSA PRIVATE KEY",
             "private-key-ec": "EC PRIVATE KEY",
             "private-key-dsa": "DSA PRIVATE KEY",
             "private-key-openssh": "OPENSSH PRIVATE KEY",
             "private-key-pkcs8": "PRIVATE KEY",
             "private-key-pgp": "PGP PRIVATE KEY BLOCK"}
    if rule in kinds:
        armor = "Version: GnuPG v2\n\n" if rule == "private-key-pgp" else ""
        return pem(r, kinds[rule], armor)
    raise KeyError(rule)


RULES = ["aws-access-key-id", "aws-secret-access-key", "github-pat-classic",
         "github-pat-fine-grained", "github-oauth", "github-app",
         "github-refresh", "gitlab-pat", "anthropic-api-key",
         "anthropic-admin-key", "anthropic-oauth", "openai-api-key",
         "slack-token", "slack-webhook", "stripe-secret-key",
         "google-api-key", "private-key-rsa", "private-key-ec",
         "private-key-dsa", "private-key-openssh", "private-key-pkcs8",
         "private-key-pgp", "jwt", "npm-token", "pypi-token",
         "huggingface-token", "sendgrid-api-key", "twilio-api-key",
         "digitalocean-token", "azure-client-secret",
         "hashicorp-vault-token", "age-secret-key"]


def write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)


def filler(n, seed):
    """n bytes of ordinary text lines (32 bytes each, the last shorter)."""
    out, i = [], 0
    while n > 0:
        line = ("lorem ipsum dolor %s %06d\n" % (seed, i))[-32:]
        line = line if n >= 32 else "z" * (n - 1) + "\n"
        out.append(line)
        n -= len(line)
        i += 1
    return "".join(out)


def ctx_file(ctx):
    """A place a secret goes: (file, its clean content)."""
    if ctx == "workspace":
        return ("workspace/src/config.py",
                '"""Settings."""\nimport os\n\n'
                'TOKEN = os.environ.get("TOKEN")\nDEBUG = False\n')
    if ctx == "hidden":
        return ("workspace/.github/workflows/deploy.yml",
                "name: deploy\non: push\njobs:\n  deploy:\n    env:\n"
                "      TOKEN: ${{ secrets.TOKEN }}\n"
                "    runs-on: ubuntu-latest\n")
    if ctx == "world":
        return ("world/snapshot.json",
                '{\n  "world": "demo",\n  "env": {"API_TOKEN": "unset"},\n'
                '  "step": 120\n}\n')
    if ctx == "session":
        return ("session/projects/-p/abc.jsonl",
                '{"type":"user","message":"hello"}\n'
                '{"type":"tool_result","content":"ok"}\n'
                '{"type":"assistant","message":"done"}\n')
    if ctx == "run":
        return ("run.json", json.dumps(
            {"id": "r-61", "step": 3, "backend": "claude-code-v1"}) + "\n")
    if ctx == "binary":
        rnd = random.Random("blob")
        return ("workspace/data/blob.bin",
                bytes(rnd.randrange(256) for _ in range(5000)))
    if ctx == "straddle":
        return ("workspace/data/big.txt", filler(3 * CHUNK, "big"))
    if ctx == "filename":
        return ("workspace/notes/readme.txt", "notes\n")
    raise KeyError(ctx)


CTXS = ["workspace", "hidden", "world", "session", "run", "binary",
        "straddle", "filename"]


def restore(run, ctx):
    path, data = ctx_file(ctx)
    write(run + "/" + path, data, "wb" if isinstance(data, bytes) else "w")
    if ctx == "filename":
        d = run + "/workspace/notes"
        for f in os.listdir(d):
            if f != "readme.txt":
                os.unlink(os.path.join(d, f))


def baseline(run):
    for ctx in CTXS:
        restore(run, ctx)


def plant(run, ctx, rule, where=0):
    """Puts rule's secret in context ctx; returns what errors/ must say."""
    s, fp = gen(rule)
    j = json.dumps(s)
    if ctx == "workspace":
        path, line = "workspace/src/config.py", 4
        write(run + "/" + path, '"""Settings."""\nimport os\n\n'
              'TOKEN = """' + s + '"""\nDEBUG = False\n')
    elif ctx == "hidden":
        path, line = "workspace/.github/workflows/deploy.yml", 6
        write(run + "/" + path, "name: deploy\non: push\njobs:\n  deploy:\n"
              "    env:\n      TOKEN: " + j + "\n"
              "    runs-on: ubuntu-latest\n")
    elif ctx == "world":
        path, line = "world/snapshot.json", 3
        write(run + "/" + path, '{\n  "world": "demo",\n  "env": '
              '{"API_TOKEN": ' + j + '},\n  "step": 120\n}\n')
    elif ctx == "session":
        path, line = "session/projects/-p/abc.jsonl", 2
        write(run + "/" + path, '{"type":"user","message":"hello"}\n'
              '{"type":"tool_result","content":' + j + '}\n'
              '{"type":"assistant","message":"done"}\n')
    elif ctx == "run":
        path, line = "run.json", None
        write(run + "/run.json", json.dumps(
            {"id": s, "step": 3, "backend": "claude-code-v1"}) + "\n")
    elif ctx == "binary":
        rnd = random.Random("blob")
        head = bytes(rnd.randrange(256) for _ in range(3000))
        tail = bytes(rnd.randrange(256) for _ in range(2000))
        path = "workspace/data/blob.bin"
        line = head.count(b"\n") + 1
        write(run + "/" + path, head + b"\0" + s.encode() + b"\0" + tail,
              "wb")
    elif ctx == "straddle":
        # The secret starts 7 bytes before a read-buffer boundary.
        path = "workspace/data/big.txt"
        start = (where or 1) * CHUNK - 7 - len("key: ")
        head = filler(start, "big")
        line = head.count("\n") + 1
        write(run + "/" + path, head + "key: " + s + "\n" +
              filler(CHUNK, "tail"))
    elif ctx == "filename":
        path, line = "workspace/notes/" + s + ".txt", None
        write(run + "/" + path, "a file named after a token\n")
    else:
        raise KeyError(ctx)
    return {"rule": rule, "path": path, "line": line, "secret": s, "fp": fp,
            "ctx": ctx}


def xxh3(data):
    """XXH3-64 by xxhsum, or None without it."""
    import shutil, subprocess
    if not shutil.which("xxhsum"):
        return None
    out = subprocess.run(["xxhsum", "-H3"], input=data, check=True,
                         capture_output=True).stdout.decode()
    return [w for w in out.replace("_", " ").split()
            if len(w) == 16 and all(c in HEX for c in w)][-1]


def check(expect_file, name, errors_file, *others):
    """Compares errors/NAME with the planted secret; prints the fingerprint,
    or exits with what is wrong."""
    x = json.load(open(expect_file))
    try:
        e = json.load(open(errors_file))
    except ValueError as ex:
        sys.exit("errors/%s is not JSON: %s" % (name, ex))
    where = "secret %s in %s" % (x["rule"], x["path"])
    got = (e.get("code"), e.get("rule"), e.get("name"))
    if got != ("secret_detected", x["rule"], name):
        sys.exit("errors/%s: (code, rule, name) = %r; expected %r (%s)" % (
            name, got, ("secret_detected", x["rule"], name), where))
    ok = {x["path"], x["path"].split("/", 1)[-1]}
    if x["ctx"] in ("run", "filename"):
        ok |= {"manifest.json"}     # they are found in the manifest
    if e.get("path") not in ok and not (
            x["ctx"] == "run" and str(e.get("path")).endswith("run.json")):
        sys.exit("errors/%s: path %r; expected one of %r (%s)" % (
            name, e.get("path"), sorted(ok), where))
    if x["line"] is not None and e.get("line") != x["line"]:
        sys.exit("errors/%s: line %r; expected %r (%s)" % (
            name, e.get("line"), x["line"], where))
    fp = e.get("fingerprint", "")
    if len(fp) != 16 or any(c not in HEX for c in fp):
        sys.exit("errors/%s: fingerprint %r is not 16 hex digits" % (name, fp))
    want = xxh3(x["rule"].encode() + b"\0" + x["fp"].encode())
    if want is not None and fp != want:
        sys.exit("errors/%s: fingerprint %s; XXH3-64(rule NUL secret) is %s"
                 " (%s)" % (name, fp, want, where))
    for f in e.get("reason"), e.get("fix"):
        if not f:
            sys.exit("errors/%s lacks reason or fix: %r" % (name, e))
    needles = [x["secret"].split("\n")[0], x["fp"][8:24]]
    for f in (errors_file,) + others:
        data = open(f, "rb").read()
        for n in needles:
            if n.encode() in data:
                sys.exit("%s holds the %s secret (%s)" % (f, x["rule"], where))
    print(fp)


def lookalikes(run):
    """Text that mentions secrets without holding one."""
    r = random.Random("lookalikes")
    import hashlib, uuid
    lines = [
        "# Configuration",
        "Set a strong password: the password must be 12 characters.",
        "password = os.environ['DB_PASSWORD']  # never commit a password",
        "Export your API key as ANTHROPIC_API_KEY; the token is read at start.",
        "The AWS sample keys: " + "AKIA" + "IOSFODNN7" + "EXAMPLE and "
        "aws_" + "secret_access_key = wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCY"
        + "EXAMPLEKEY",
        "A placeholder: " + "gh" + "p_" + "x" * 36 + " or " + "sk-" +
        "ant-api03-" + "X" * 95 + " or " + "h" + "f_" + "a" * 34,
        "A Bearer token goes in the Authorization header.",
        "if line.startswith(\"-----" + "BEGIN RSA PRIVATE KEY-----\"):",
        "-----" + "BEGIN PUBLIC KEY-----",
    ]
    pub = base64.b64encode(bytes(r.randrange(256) for _ in range(270))).decode()
    lines += [pub[i:i + 64] for i in range(0, len(pub), 64)]
    lines += ["-----" + "END PUBLIC KEY-----", "-----" + "BEGIN CERTIFICATE-----"]
    lines += [pub[i:i + 64] for i in range(0, len(pub), 64)]
    lines += ["-----" + "END CERTIFICATE-----"]
    lines += ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" +
              rs(r, ALNUM, 43) + " user@host"]
    for i in range(50):
        lines.append("id %s sha256 %s sha1 %s" % (
            uuid.UUID(int=r.getrandbits(128), version=4),
            hashlib.sha256(b"%d" % i).hexdigest(),
            hashlib.sha1(b"%d" % i).hexdigest()))
        lines.append("image sha256:%s" % hashlib.sha256(b"i%d" % i).hexdigest())
    img = base64.b64encode(bytes(r.randrange(256) for _ in range(30000)))
    lines.append('<img src="data:image/png;base64,' + img.decode() + '">')
    lines.append("eyJhbGciOiJub25lIn0 is a JWT header alone")
    write(run + "/workspace/docs/lookalikes.md", "\n".join(lines) + "\n")
    lock = {"name": "app", "lockfileVersion": 3, "packages": {}}
    for i in range(200):
        h = hashlib.sha512(b"pkg%d" % i).digest()
        lock["packages"]["node_modules/p%d" % i] = {
            "version": "1.0.%d" % i,
            "resolved": "https://registry.npmjs.org/p%d/-/p%d-1.0.%d.tgz"
                        % (i, i, i),
            "integrity": "sha512-" + base64.b64encode(h).decode()}
    write(run + "/workspace/package-lock.json", json.dumps(lock, indent=2))
    write(run + "/world/lookalikes.json", json.dumps(
        {"note": lines[1], "uuid": str(uuid.UUID(int=r.getrandbits(128))),
         "hash": hashlib.sha256(b"w").hexdigest(),
         "image": img.decode()[:4000]}, indent=1) + "\n")
    write(run + "/session/projects/-p/clean.jsonl", "".join(
        json.dumps({"type": "assistant", "message": l}) + "\n"
        for l in lines) )


def main(argv):
    sys.argv = argv
    cmd = sys.argv[1]
    if cmd == "rules":
        print("\n".join(RULES))
    elif cmd == "baseline":
        baseline(sys.argv[2])
    elif cmd == "plant":
        # plant RUN CTX RULE [WHERE] EXPECT: restore the last place planted,
        # plant, and write what errors/ must say to EXPECT.
        run, ctx, rule, where, expect = sys.argv[2:7]
        try:
            last = json.load(open(expect))["ctx"]
        except (OSError, ValueError, KeyError):
            last = None
        if last:
            restore(run, last)
        with open(expect, "w") as f:
            json.dump(plant(run, ctx, rule, int(where)), f)
    elif cmd == "restore":
        restore(sys.argv[2], json.load(open(sys.argv[3]))["ctx"])
        os.unlink(sys.argv[3])
    elif cmd == "check":
        check(*sys.argv[2:])
    elif cmd == "allowed":
        for rule in sys.argv[3:]:
            write("%s/workspace/allowed/%s.txt" % (sys.argv[2], rule),
                  "line one\nvalue: " + gen(rule)[0] + "\n")
    elif cmd == "lookalikes":
        lookalikes(sys.argv[2])
    elif cmd == "secret":
        s, fp = gen(sys.argv[2])
        sys.stdout.write(s if sys.argv[3] == "secret" else fp)
    elif cmd == "scan-rules":
        # The rule ids of core/scan.c's table, in its order.
        import re
        src = open(sys.argv[2]).read()
        table = src[src.index("rules[R_COUNT]"):]
        table = table[:table.index("};")]
        print("\n".join(re.findall(r'\[R_\w+\]\s*=\s*\{\s*"([a-z0-9-]+)"',
                                   table)))
    else:
        sys.exit("unknown command " + cmd)


def serve():
    """One command a line, arguments separated by US (0x1f); answers with
    the command's output and a line of RS (0x1e) and its status."""
    import contextlib, io
    for line in sys.stdin:
        out, rc = io.StringIO(), 0
        try:
            with contextlib.redirect_stdout(out):
                main(["secrets.py"] + line.rstrip("\n").split("\x1f")[:-1])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
            if not isinstance(e.code, int) and e.code is not None:
                out.write(str(e.code))
        except Exception as e:
            rc = 2
            out.write("%s: %s" % (type(e).__name__, e))
        text = out.getvalue()
        if text and not text.endswith("\n"):
            text += "\n"
        sys.stdout.write(text + "\x1e%d\n" % rc)
        sys.stdout.flush()


if sys.argv[1:] == ["serve"]:
    serve()
else:
    main(sys.argv)
EOF
# One generator process answers every call (a Python start costs more
# than most of what is asked of it): gen CMD ARG... prints its output.
mkfifo "$WORK/gen.in" "$WORK/gen.out"
python3 "$PY" serve <"$WORK/gen.in" >"$WORK/gen.out" &
track_pid $!
exec 7>"$WORK/gen.in" 8<"$WORK/gen.out"
gen() {
	local line out='' rc=''
	printf '%s\037' "$@" >&7
	printf '\n' >&7
	while IFS= read -r line <&8; do
		case $line in
		$'\036'*)
			rc=${line#?}
			break
			;;
		esac
		out+=$line$'\n'
	done
	printf '%s' "${out%$'\n'}"
	[ -n "$out" ] && [ "$out" != $'\n' ] && echo
	return "${rc:-3}"
}

# ---- which rules: core/scan.c's table, each of which must have a generator ------
RULES=$(gen rules)
if [ -f "$SRCDIR/core/scan.c" ]; then
	SCAN_RULES=$(gen scan-rules "$SRCDIR/core/scan.c") ||
		fail "cannot read the rule table of core/scan.c"
	[ -n "$SCAN_RULES" ] || fail "found no rule ids in core/scan.c"
	missing=$(comm -23 <(sort <<<"$SCAN_RULES") <(sort <<<"$RULES"))
	[ -z "$missing" ] ||
		fail "rules of core/scan.c without a generator here: $missing"
	RULES=$SCAN_RULES
else
	note "core/scan.c not in SRCDIR: testing the generator's own rule list"
fi
nrules=$(wc -l <<<"$RULES")
note "$nrules scan rules"
command -v xxhsum >/dev/null 2>&1 ||
	note "xxhsum not installed (Debian package xxhash): fingerprints unchecked"

# ---- the run ------------------------------------------------------------------
mkdir -p "$RUN/world" "$RUN/workspace" "$RUN/session/projects/-p"
gen baseline "$RUN"
echo 'plain' >"$RUN/workspace/README.md"
EXCL=$WORK/exclude
printf '*.secret\nworkspace/private/\n' >"$EXCL"

store_state() {
	ls -A "$STORE"
	cat "$STORE/checkpoint.json" 2>/dev/null || true
}

ckpt_mount "$STORE" "$MNT" "source=$RUN,exclude_from=$EXCL"
timeout 20 mkdir "$MNT/snapshots/base" || fail "the clean save (base) failed"

# refused_secret NAME CTX RULE [WHERE]: with RULE's secret planted in CTX,
# mkdir NAME is refused with EPERM, STORE is unchanged, and errors/NAME
# says the rule, path, line and fingerprint but not the secret, nor do the
# status file and the log.
ALLOW=$WORK/allow
EXPECT=$WORK/expect.json
: >"$ALLOW"
refused_secret() {
	local name=$1 before fp
	gen plant "$RUN" "$2" "$3" "${4:-0}" "$EXPECT" ||
		fail "planting $3 in $2"
	before=$(store_state)
	assert_errno EPERM mkdir "$MNT/snapshots/$name"
	assert_eq "$before" "$(store_state)" "STORE after $3 in $2"
	timeout 5 cat "$MNT/.ckptfs/errors/$name" >"$WORK/errors.$name" ||
		fail "no errors/$name after a save with $3 in $2 was refused"
	timeout 5 cat "$MNT/.ckptfs/status" >"$WORK/status" ||
		fail "cannot read .ckptfs/status"
	fp=$(gen check "$EXPECT" "$name" "$WORK/errors.$name" "$WORK/status" \
		"$DAEMON_LOG") || fail "$fp"
	grep -qx "$fp" "$ALLOW" || echo "$fp" >>"$ALLOW"
}

# ---- every rule, in turn, in each kind of place ------------------------------------
CTXS=(workspace hidden world session run binary)
i=0
while read -r rule; do
	refused_secret "s$i" "${CTXS[$((i % ${#CTXS[@]}))]}" "$rule"
	i=$((i + 1))
done <<<"$RULES"
# Across the read-buffer boundaries (256 KiB, 512 KiB) and in a file name.
refused_secret x1 straddle aws-access-key-id 1
refused_secret x2 straddle private-key-openssh 2
refused_secret x3 straddle jwt 2
refused_secret x4 filename github-pat-classic
# The same secrets in every other kind of place, each once more.
CTXS=(session run binary workspace hidden world)
i=0
while read -r rule; do
	refused_secret "t$i" "${CTXS[$((i % ${#CTXS[@]}))]}" "$rule"
	i=$((i + 1))
done <<<"$RULES"
gen restore "$RUN" "$EXPECT"
assert_eq "base.ckpt
checkpoint.json" "$(ls -A "$STORE")" "STORE after every refusal"

# ---- clean look-alikes are saved --------------------------------------------------
gen lookalikes "$RUN"
out=$(timeout 20 mkdir "$MNT/snapshots/clean" 2>&1) ||
	fail "a save of look-alikes was refused: $out;" \
		"$(cat "$MNT/.ckptfs/errors/clean" 2>&1)"
cmp -s "$RUN/workspace/docs/lookalikes.md" \
	"$MNT/snapshots/clean/workspace/docs/lookalikes.md" ||
	fail "look-alikes not saved as they are"

# ---- secrets where a save does not look refuse nothing ------------------------------
tok=$(gen secret github-pat-classic secret)
key=$(gen secret private-key-rsa secret)
aws=$(gen secret aws-access-key-id secret)
W=$RUN/workspace
SE=$RUN/session
mkdir -p "$W/node_modules/pkg" "$W/.venv/lib" "$W/private" "$W/app" \
	"$SE/shell-snapshots" "$SE/statsig" "$SE/todos"
echo "module.exports = '$tok';" >"$W/node_modules/pkg/index.js"
echo "TOKEN = '$tok'" >"$W/.venv/lib/conf.py"
echo "GITHUB_TOKEN=$tok" >"$W/.env"
echo "AWS_ACCESS_KEY_ID=$aws" >"$W/app/.env.production"
printf '%s\n' "$key" >"$W/id_rsa"
echo "{\"token\": \"$tok\"}" >"$W/app/.credentials.json"
echo "token $tok" >"$W/notes.secret"
echo "token $tok" >"$W/private/keep-out.txt"
echo "export GITHUB_TOKEN=$tok" >"$SE/shell-snapshots/s.sh"
echo "{\"env\": {\"GITHUB_TOKEN\": \"$tok\"}}" >"$SE/settings.json"
echo "{\"token\": \"$tok\"}" >"$SE/statsig/x"
echo "{\"display\": \"$tok\"}" >"$SE/history.jsonl"
echo "{\"accessToken\": \"$tok\"}" >"$SE/todos/.credentials.json"
echo "$tok" >"$RUN/world/.env"
out=$(timeout 20 mkdir "$MNT/snapshots/filtered" 2>&1) ||
	fail "secrets in files a save leaves out refused the save: $out;" \
		"$(cat "$MNT/.ckptfs/errors/filtered" 2>&1)"
if grep -rlaF "$tok" "$MNT/snapshots/filtered" >"$WORK/leak" 2>&1; then
	fail "the filtered secret is in the checkpoint: $(cat "$WORK/leak")"
fi
# A secret in an allowlisted transcript's unfinished last line is not
# written, so it refuses nothing either.
printf '{"type":"user","message":"%s' "$tok" >>"$SE/projects/-p/abc.jsonl"
out=$(timeout 20 mkdir "$MNT/snapshots/partial" 2>&1) ||
	fail "a secret in a transcript's unfinished last line refused: $out"
gen baseline "$RUN"
daemon_alive
ckpt_umount "$MNT"

# ---- secrets_allow ------------------------------------------------------------------
# Every secret at once, each in its own place: refused while one fingerprint
# is missing from the allow file, saved once all are there.
gen allowed "$RUN" $RULES
nallow=$(wc -l <"$ALLOW")
[ "$nallow" -ge "$nrules" ] ||
	fail "only $nallow fingerprints collected for $nrules rules"
first_rule=$(head -n 1 <<<"$RULES")
fp0=$(python3 -c 'import json, sys
print(json.load(open(sys.argv[1]))["fingerprint"])' "$WORK/errors.s0")
{
	echo "# reviewed false positives"
	echo
	grep -vx "$fp0" "$ALLOW" | sed 's/$/  # reviewed/'
} >"$WORK/allow-most"
{
	echo "# reviewed false positives"
	sed 's/^/ /' "$ALLOW"
	echo
} >"$WORK/allow-all"
ckpt_mount "$STORE" "$MNT" \
	"source=$RUN,exclude_from=$EXCL,secrets_allow=$WORK/allow-most"
before=$(store_state)
assert_errno EPERM mkdir "$MNT/snapshots/allowed"
assert_eq "$before" "$(store_state)" "STORE after a refusal under secrets_allow"
got=$(python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
print(j["rule"], j["fingerprint"])' <(timeout 5 cat "$MNT/.ckptfs/errors/allowed"))
assert_eq "$first_rule $fp0" "$got" \
	"errors/allowed: the one secret whose fingerprint is not allowed"
ckpt_umount "$MNT"
ckpt_mount "$STORE" "$MNT" \
	"source=$RUN,exclude_from=$EXCL,secrets_allow=$WORK/allow-all"
out=$(timeout 20 mkdir "$MNT/snapshots/allowed" 2>&1) ||
	fail "secrets_allow with every fingerprint: mkdir refused: $out;" \
		"$(cat "$MNT/.ckptfs/errors/allowed" 2>&1)"
out=$(timeout 20 diff -r "$RUN/workspace/allowed" \
	"$MNT/snapshots/allowed/workspace/allowed" 2>&1) ||
	fail "allowed secrets not saved as they are: $out"
daemon_alive
ckpt_umount "$MNT"

# A malformed allow file fails the mount.
printf 'abcdef\nnot a fingerprint\n' >"$WORK/allow-bad"
rc=0
out=$(timeout -k 2 10 "$CKPTFS" "$STORE" "$MNT" -f \
	-o "source=$RUN,secrets_allow=$WORK/allow-bad" 2>&1 </dev/null) || rc=$?
if is_mounted "$MNT"; then
	fusermount3 -u -z "$MNT"
	fail "ckptfs mounted with a malformed secrets_allow file"
fi
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ -n "$out" ] ||
	fail "a malformed secrets_allow file: status $rc, message '$out'"
exit 0
