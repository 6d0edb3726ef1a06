#!/usr/bin/env python3
"""Verifies a rollcall evidence package, offline, with Python 3 alone.

    python3 verify.py --fingerprint HEX [--openssl] [PACKAGE_DIR]

PACKAGE_DIR defaults to the folder this file is in. Ed25519 signatures are
checked with the `cryptography` package when it can be imported, otherwise
(or with --openssl) with the `openssl` command (OpenSSL 3 or later).

Nothing inside the package is trusted by itself. The key must be the one
the employer published: given with --fingerprint (`rollcall evidence
pubkey` prints it), or, without it, confirmed by typing `yes` at the
terminal; with neither (no flag, no terminal) that check fails.

Checks, in order (VERIFY.md says what each one proves):
  1. pubkey.txt     the key: its id and fingerprint follow from the raw key,
                    and it is the key the employer published
  2. manifest.sig   the signature of manifest.json by that key
  3. manifest.json  every file listed is present, of its size and SHA-256,
                    and no file is missing or extra
  4. checkpoint.txt the signed checkpoint (C2SP signed note) and its key id;
                    its origin is the log of the manifest's tenant
  5. leaves.jsonl   each leaf's index (inside the checkpoint, not repeated),
                    its hash, and its inclusion proof against the checkpoint
                    (RFC 9162 §2.1.3.2); an erased leaf's erasure is recorded
                    by a `forgotten` leaf of the package
  6. raw/, notices/ each payload and notice against the hashes in its leaf;
                    a payload of a leaf that kept its content is never absent
  7. consistency    the earlier checkpoint's signature and origin, and that
                    the log at export extends it (RFC 9162 §2.1.4.2)

After a key rotation the package carries handovers.txt: each hand-over must
be signed by both its keys; the fingerprint given may then be that of any key
joined to the package's key by hand-overs, and a checkpoint may be signed by
any such key (a retired one only up to the checkpoint its hand-over names).

Exit status: 0 when every check passed, 1 when one failed, 2 when the
package could not be checked at all (no Ed25519 implementation, bad usage).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

FORMAT = "rollcall-evidence-package/1"
# The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the raw
# 32-byte key follows it.
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
# The signature algorithm byte of Ed25519 in C2SP signed notes.
ED25519_NOTE_ALG = 0x01
# Files an operating system leaves in a folder it has shown: never read.
OS_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}
SIGNED_BY_ITSELF = {"manifest.json", "manifest.sig"}


def sha256(data):
    return hashlib.sha256(data).digest()


# --- RFC 6962 / RFC 9162 Merkle tree hashing, written from the RFC text ---


def leaf_hash(data):
    """RFC 9162 §2.1.1: the hash of a leaf is HASH(0x00 || data)."""
    return sha256(b"\x00" + data)


def node_hash(left, right):
    """RFC 9162 §2.1.1: an interior node is HASH(0x01 || left || right)."""
    return sha256(b"\x01" + left + right)


def verify_inclusion(leaf_index, tree_size, leaf, inclusion_path, root_hash):
    """RFC 9162 §2.1.3.2, step by step."""
    # 1. leaf_index must be inside the tree.
    if leaf_index < 0 or leaf_index >= tree_size:
        return False
    # 2.
    fn, sn = leaf_index, tree_size - 1
    # 3.
    r = leaf
    # 4.
    for p in inclusion_path:
        # 4a.
        if sn == 0:
            return False
        # 4b.
        if fn & 1 == 1 or fn == sn:
            r = node_hash(p, r)
            if fn & 1 == 0:
                while not (fn & 1 == 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # 4c.
        fn >>= 1
        sn >>= 1
    # 5.
    return sn == 0 and r == root_hash


def verify_consistency(first, second, first_hash, second_hash, consistency_path):
    """RFC 9162 §2.1.4.2, step by step, for 0 < first < second."""
    if not 0 < first < second:
        return False
    # 1.
    if len(consistency_path) == 0:
        return False
    path = list(consistency_path)
    # 2.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3.
    fn, sn = first - 1, second - 1
    # 4.
    while fn & 1 == 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        # 6a.
        if sn == 0:
            return False
        # 6b.
        if fn & 1 == 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if fn & 1 == 0:
                while not (fn & 1 == 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        # 6c.
        fn >>= 1
        sn >>= 1
    # 7.
    return fr == first_hash and sr == second_hash and sn == 0


# --- Ed25519 ---


class Ed25519:
    """Verifies Ed25519 signatures with `cryptography`, or with openssl."""

    def __init__(self, force_openssl):
        self.name = None
        if not force_openssl:
            try:
                from cryptography.exceptions import InvalidSignature
                from cryptography.hazmat.primitives.asymmetric.ed25519 import (
                    Ed25519PublicKey,
                )

                self._invalid = InvalidSignature
                self._key = Ed25519PublicKey
                self.name = "the Python package cryptography"
            except ImportError:
                pass
        if self.name is None:
            self.openssl = shutil.which("openssl")
            if self.openssl is None:
                raise EnvironmentError(
                    "no Ed25519 implementation: install the Python package "
                    "`cryptography` (pip install cryptography) or OpenSSL 3"
                )
            version = subprocess.run(
                [self.openssl, "version"], capture_output=True, text=True
            ).stdout.strip()
            m = re.match(r"OpenSSL (\d+)\.", version)
            if not m or int(m.group(1)) < 3:
                raise EnvironmentError(
                    "`openssl` is %r: OpenSSL 3 or later is needed to verify "
                    "Ed25519, or install the Python package `cryptography`" % version
                )
            self.name = "the openssl command (%s)" % version

    def verify(self, public_key, signature, message):
        if len(public_key) != 32 or len(signature) != 64:
            return False
        if self.name.startswith("the Python package"):
            try:
                self._key.from_public_bytes(public_key).verify(signature, message)
                return True
            except (self._invalid, ValueError):
                return False
        der = ED25519_SPKI_PREFIX + public_key
        pem = (
            "-----BEGIN PUBLIC KEY-----\n"
            + base64.b64encode(der).decode()
            + "\n-----END PUBLIC KEY-----\n"
        )
        with tempfile.TemporaryDirectory() as tmp:
            files = {"pub.pem": pem.encode(), "msg": message, "sig": signature}
            for name, content in files.items():
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(content)
            run = subprocess.run(
                [
                    self.openssl, "pkeyutl", "-verify", "-pubin",
                    "-inkey", os.path.join(tmp, "pub.pem"), "-rawin",
                    "-in", os.path.join(tmp, "msg"),
                    "-sigfile", os.path.join(tmp, "sig"),
                ],
                capture_output=True,
                text=True,
            )
            return run.returncode == 0 and "Signature Verified Successfully" in run.stdout


# --- reporting ---


class Results:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def ok(self, what, detail):
        self.passed += 1
        print("[PASS] %s: %s" % (what, detail))

    def fail(self, what, detail):
        self.failed += 1
        print("[FAIL] %s: %s" % (what, detail))

    def note(self, what, detail):
        print("[NOTE] %s: %s" % (what, detail))


class Broken(Exception):
    """A file that cannot be read as what it should be."""


def read(root, path):
    full = os.path.join(root, *path.split("/"))
    try:
        with open(full, "rb") as f:
            return f.read()
    except OSError as e:
        raise Broken("cannot be read (%s)" % e.strerror)


def hex32(text, what):
    if not isinstance(text, str) or not re.fullmatch(r"[0-9a-f]{64}", text):
        raise Broken("%s is not 64 lowercase hex digits" % what)
    return bytes.fromhex(text)


def decimal(text):
    """A tree size or a leaf index: at most 20 decimal digits (a 64-bit
    number, as rollcall writes them), so that no text of any length makes
    Python convert a number of thousands of digits; None if it is not one."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,20}", text):
        return None
    n = int(text)
    return n if n < 1 << 64 else None


def b64(text, what):
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise Broken("%s is not base64" % what)


# --- the key and signed notes ---


class Key:
    def __init__(self, name, key_id, public_key):
        self.name = name
        self.key_id = key_id
        self.public_key = public_key

    def fingerprint(self):
        digest = sha256(self.public_key).hex()
        return ":".join(digest[i:i + 4] for i in range(0, 64, 4))


def note_key_id(name, public_key):
    """C2SP signed-note: the first 4 bytes of SHA-256(name || "\\n" || 0x01 || key)."""
    return sha256(name.encode() + b"\n" + bytes([ED25519_NOTE_ALG]) + public_key)[:4]


def parse_pubkey(text):
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            label, value = line.split(":", 1)
            fields[label.strip()] = value.strip()
    vkey = fields.get("verifier key")
    raw = fields.get("Ed25519 public key (base64)")
    printed = fields.get("fingerprint (SHA-256)")
    if not (vkey and raw and printed):
        raise Broken("needs the lines `verifier key:`, `Ed25519 public key (base64):` and `fingerprint (SHA-256):`")
    key = parse_verifier_key(vkey)
    if b64(raw, "the raw public key") != key.public_key:
        raise Broken("the raw public key is not the one in the verifier key")
    if printed != key.fingerprint():
        raise Broken("the fingerprint printed is not the key's (%s)" % key.fingerprint())
    return key


def parse_verifier_key(vkey):
    """`<name>+<key id>+<base64(0x01 || key)>`, its key id checked."""
    # The key's base64 may hold "+" too: only the first two separate fields.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise Broken("the verifier key is not <name>+<key id>+<key>")
    name, id_hex, encoded = parts
    blob = b64(encoded, "the verifier key")
    if len(blob) != 33 or blob[0] != ED25519_NOTE_ALG:
        raise Broken("the verifier key is not an Ed25519 key (0x01 and 32 bytes)")
    key = Key(name, note_key_id(name, blob[1:]), blob[1:])
    if id_hex != key.key_id.hex():
        raise Broken("the key id %s is not the one the key gives (%s)" % (id_hex, key.key_id.hex()))
    return key


def verify_note(note, key, ed):
    """Checks a C2SP signed note; returns its text (the signed lines)."""
    if not note.endswith("\n"):
        raise Broken("does not end with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise Broken("has no blank line before its signatures")
    text, signatures = note[:split + 1], note[split + 2:]
    found = False
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            raise Broken("a signature line does not start with an em dash")
        try:
            name, encoded = line[2:].split(" ")
        except ValueError:
            raise Broken("a signature line is not `— <name> <signature>`")
        if name != key.name:
            continue
        blob = b64(encoded, "a signature")
        if len(blob) != 68 or blob[:4] != key.key_id:
            continue
        found = True
        if ed.verify(key.public_key, blob[4:], text.encode()):
            return text
    if found:
        raise Broken("the signature by %s does not verify" % key.name)
    raise Broken("has no signature by key %s (id %s)" % (key.name, key.key_id.hex()))


def parse_checkpoint(text):
    """C2SP tlog-checkpoint: origin, tree size, base64 root hash."""
    lines = text.split("\n")
    if len(lines) < 4 or decimal(lines[1]) is None:
        raise Broken("is not a checkpoint (origin, size, root)")
    root = b64(lines[2], "the root hash")
    if len(root) != 32:
        raise Broken("the root hash is not 32 bytes")
    return lines[0], decimal(lines[1]), root


# --- the checks ---


def list_files(root):
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__MACOSX"]
        for f in files:
            rel = os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
            found.add(rel)
    return found


def safe_path(path):
    return (
        isinstance(path, str)
        and path
        and not path.startswith("/")
        and "\\" not in path
        and all(part not in ("", ".", "..") for part in path.split("/"))
    )


def normalised_fingerprint(text):
    """64 lowercase hex digits, from a fingerprint written with or without
    the colons (and spaces) that group it; None if it is not one."""
    digits = text.replace(":", "").replace(" ", "").lower()
    return digits if re.fullmatch(r"[0-9a-f]{64}", digits) else None


NO_KEY = ("no --fingerprint was given and there is no terminal to confirm the key at: the key inside "
          "the package proves nothing by itself. Run verify.py again with --fingerprint and the "
          "fingerprint the employer published (`rollcall evidence pubkey` prints it). "
          "未指定 --fingerprint：请以用人单位公布的公钥指纹运行 python3 verify.py --fingerprint <指纹>")


def confirm_at_terminal(key):
    """Shows the key's fingerprint and asks whoever is at the terminal to
    confirm it is the one the employer published: True when they type yes,
    False otherwise, None when there is no terminal to ask at."""
    try:
        if sys.stdin is None or not sys.stdin.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    sys.stdout.flush()
    out = sys.stdout if sys.stdout.isatty() else sys.stderr
    out.write(
        "\nThe package is signed by the key with the fingerprint\n"
        "本证据包的签名公钥指纹为：\n\n    %s\n\n"
        "Is it the fingerprint the employer published (employee handbook, company notice)? "
        "Type yes to confirm.\n"
        "是否与用人单位公布的指纹（员工手册、公司公告等）一致？一致请输入 yes：" % key.fingerprint()
    )
    out.flush()
    try:
        answer = sys.stdin.readline()
    except (KeyboardInterrupt, OSError):
        answer = ""
    out.write("\n")
    return answer.strip().lower() == "yes"


# --- evidence key hand-overs ---

HANDOVER_HEADER = "rollcall evidence key hand-over"


class Handover:
    """A hand-over from one evidence key to the next, signed by both."""

    def __init__(self, old, new, time, checkpoints):
        self.old = old
        self.new = new
        self.time = time
        self.checkpoints = checkpoints  # {origin: (size, root)}


def parse_handover(note, ed):
    """Checks one hand-over note: its form, and a valid signature by the
    old key AND by the new key."""
    split = note.rfind("\n\n")
    if split < 0:
        raise Broken("has no blank line before its signatures")
    lines = note[:split].split("\n")
    if len(lines) < 4 or lines[0] != HANDOVER_HEADER:
        raise Broken("is not `%s`, `old`, `new` and `time` lines" % HANDOVER_HEADER)
    fields = []
    for line, tag in zip(lines[1:4], ("old ", "new ", "time ")):
        if not line.startswith(tag):
            raise Broken("has no `%s` line" % tag.strip())
        fields.append(line[len(tag):])
    old, new = parse_verifier_key(fields[0]), parse_verifier_key(fields[1])
    if old.public_key == new.public_key:
        raise Broken("hands a key over to itself")
    checkpoints = {}
    for line in lines[4:]:
        parts = line.split(" ")
        if len(parts) != 4 or parts[0] != "checkpoint" or decimal(parts[2]) is None:
            raise Broken("a line is not `checkpoint <origin> <size> <root>`")
        checkpoints[parts[1]] = (decimal(parts[2]), b64(parts[3], "a hand-over root"))
    for which, key in (("old", old), ("new", new)):
        try:
            verify_note(note, key, ed)
        except Broken as e:
            raise Broken("the signature of the %s key %s+%s: %s" % (which, key.name, key.key_id.hex(), e))
    return Handover(old, new, fields[2], checkpoints)


def read_handovers(root, manifest_files, ed, results):
    """The package's hand-overs (handovers.txt, one note after another),
    each checked; None when one is broken (then no older key is believed)."""
    if "handovers.txt" not in manifest_files:
        return []
    try:
        text = read(root, "handovers.txt").decode("utf-8")
        starts = [m.start() for m in re.finditer(r"(?m)^%s$" % re.escape(HANDOVER_HEADER), text)]
        if not starts or starts[0] != 0:
            raise Broken("does not start with a hand-over")
        notes = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    except (Broken, UnicodeDecodeError) as e:
        results.fail("handovers.txt", str(e))
        return None
    handovers = []
    for number, note in enumerate(notes, 1):
        try:
            handovers.append(parse_handover(note, ed))
        except Broken as e:
            results.fail("handovers.txt", "hand-over %d %s" % (number, e))
            return None
    # A key hands over once: a second hand-over of the same key is a fork,
    # which only someone holding a retired key could have made.
    for i, h in enumerate(handovers):
        for other in handovers[i + 1:]:
            if other.old.public_key == h.old.public_key:
                results.fail("handovers.txt", "key %s is handed over twice (to %s and to %s): a fork, "
                             "made by someone holding the retired key" % (h.old.key_id.hex(), h.new.key_id.hex(),
                                                                          other.new.key_id.hex()))
                return None
    for h in handovers:
        results.ok("handovers.txt", "key %s handed over to key %s at %s, signed by both"
                   % (h.old.key_id.hex(), h.new.key_id.hex(), h.time))
    return handovers


def chain_of(key, handovers):
    """The keys joined to `key` by hand-overs (either way), `key` first."""
    keys = [key]
    grew = True
    while grew:
        grew = False
        for h in handovers:
            for a, b in ((h.old, h.new), (h.new, h.old)):
                if any(k.public_key == a.public_key for k in keys) and \
                        not any(k.public_key == b.public_key for k in keys):
                    keys.append(b)
                    grew = True
    return keys


def verify_by_chain(note, keys, handovers, ed, exact=True):
    """Verifies `note` by a key of the chain. A retired key's checkpoint is
    the very one its hand-over names of that log (`exact`: the package's
    own checkpoint, which nothing else vouches for), or one no larger (an
    earlier checkpoint, which a consistency proof ties to the package's).
    Returns (text, key)."""
    for key in keys:
        try:
            text = verify_note(note, key, ed)
        except Broken:
            continue
        origin, size, root = parse_checkpoint(text)
        for h in handovers:
            if h.old.public_key == key.public_key:
                # A retired key's checkpoint in a package made since is the
                # very one its hand-over names: a key that leaked after its
                # retirement cannot sign another.
                up_to, handed_root = h.checkpoints.get(origin, (0, None))
                if (size, root) != (up_to, handed_root) if exact else size > up_to:
                    raise Broken("is signed by key %s, which handed over at the checkpoint of %d leaves of %s: "
                                 "a retired key's checkpoint must be that one" % (key.key_id.hex(), up_to, origin))
        return text, key
    raise Broken("is signed by no key of the chain of hand-overs from the package's key (%s)"
                 % ", ".join(k.key_id.hex() for k in keys))


def check_key(key, fingerprint, confirm, results, chain=()):
    """The key must be the employer's: given with --fingerprint (directly,
    or by hand-overs from or to it), or confirmed."""
    if fingerprint is not None:
        wanted = normalised_fingerprint(fingerprint)
        reached = [k for k in chain if sha256(k.public_key).hex() == wanted]
        if wanted is None:
            results.fail("pubkey.txt", "--fingerprint %r is not a SHA-256 fingerprint (64 hex digits)" % fingerprint)
        elif wanted == sha256(key.public_key).hex():
            results.ok("pubkey.txt", "the key is the one whose fingerprint was given with --fingerprint")
        elif reached:
            results.ok("pubkey.txt", "the key is joined by hand-overs signed by both keys (handovers.txt) to key %s, "
                       "whose fingerprint was given with --fingerprint" % reached[0].key_id.hex())
        else:
            results.fail("pubkey.txt", "the key's fingerprint is NOT the one given with --fingerprint: "
                         "the package was not signed with the key the employer published")
        return
    answer = confirm(key)
    if answer is None:
        results.fail("pubkey.txt", NO_KEY)
    elif answer:
        results.ok("pubkey.txt", "the fingerprint was confirmed at the terminal as the one the employer published")
    else:
        results.fail("pubkey.txt", "the fingerprint was not confirmed at the terminal as the one the employer published")


def check(root, ed, results, fingerprint, confirm):
    # 1. The key, and that it is the employer's.
    try:
        key = parse_pubkey(read(root, "pubkey.txt").decode("utf-8"))
        results.ok("pubkey.txt", "key %s, id %s, fingerprint %s" % (key.name, key.key_id.hex(), key.fingerprint()))
    except (Broken, UnicodeDecodeError) as e:
        results.fail("pubkey.txt", str(e))
        return
    try:
        listed = manifest_paths(json.loads(read(root, "manifest.json").decode("utf-8")))
    except (Broken, ValueError, UnicodeDecodeError, AttributeError):
        listed = set()
    handovers = read_handovers(root, listed, ed, results)
    chain = chain_of(key, handovers or [])
    check_key(key, fingerprint, confirm, results, chain)
    # A package is signed by the newest key of its hand-overs: one signed by
    # a key that handed over was made by someone holding a retired key.
    for h in handovers or []:
        if h.old.public_key == key.public_key:
            results.fail("pubkey.txt", "key %s handed over to key %s at %s: a package made since is signed by the "
                         "newer key, so this one was made with a retired key"
                         % (key.key_id.hex(), h.new.key_id.hex(), h.time))

    # 2. The manifest's signature.
    try:
        manifest_bytes = read(root, "manifest.json")
        signature = b64(read(root, "manifest.sig").decode("ascii", "replace").strip(), "manifest.sig")
        if ed.verify(key.public_key, signature, manifest_bytes):
            results.ok("manifest.sig", "manifest.json is signed by key %s" % key.name)
        else:
            results.fail("manifest.sig", "the signature of manifest.json does not verify: manifest.json or manifest.sig was changed")
    except Broken as e:
        results.fail("manifest.sig", str(e))

    # 3. The files against the manifest.
    try:
        manifest = json.loads(read(root, "manifest.json").decode("utf-8"))
        if manifest.get("format") != FORMAT:
            raise Broken("the format is %r, not %s" % (manifest.get("format"), FORMAT))
        entries = manifest["files"]
        tenant = manifest.get("tenant")
        if not isinstance(tenant, str) or not tenant:
            raise Broken("it names no tenant")
    except (Broken, ValueError, KeyError, TypeError, AttributeError) as e:
        results.fail("manifest.json", "cannot be read: %s" % e)
        return
    listed = set()
    bad = 0
    for entry in entries:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not safe_path(path) or path in SIGNED_BY_ITSELF or path in listed:
            results.fail("manifest.json", "lists a bad or repeated path %r" % (path,))
            bad += 1
            continue
        listed.add(path)
        try:
            content = read(root, path)
        except Broken:
            results.fail(path, "is listed in manifest.json but missing")
            bad += 1
            continue
        if len(content) != entry.get("size"):
            results.fail(path, "is %d bytes, manifest.json says %s" % (len(content), entry.get("size")))
            bad += 1
        elif hashlib.sha256(content).hexdigest() != entry.get("sha256"):
            results.fail(path, "its SHA-256 is not the one in manifest.json: the file was changed")
            bad += 1
    for path in sorted(list_files(root) - listed - SIGNED_BY_ITSELF):
        if path.split("/")[-1] in OS_LITTER:
            results.note(path, "ignored (left by the operating system)")
            continue
        results.fail(path, "is not listed in manifest.json: an extra file")
        bad += 1
    if bad == 0:
        results.ok("manifest.json", "%d files present, sizes and SHA-256 as listed, none extra" % len(listed))

    # 4. The checkpoint, of the tenant's log: rollcall names the log of
    # tenant T `<key name>/T` (the key is named after the service).
    try:
        note = read(root, "checkpoint.txt").decode("utf-8")
        text, signer = verify_by_chain(note, chain, handovers or [], ed)
        origin, size, tree_root = parse_checkpoint(text)
        results.ok("checkpoint.txt", "signed by %s (key %s): log %s, %d leaves, root %s"
                   % (signer.name, signer.key_id.hex(), origin, size, tree_root.hex()))
    except (Broken, UnicodeDecodeError) as e:
        results.fail("checkpoint.txt", str(e))
        return
    expected = log_origin(key, tenant)
    if origin != expected:
        results.fail("checkpoint.txt", "its origin %r is not the log of tenant %r (%r): the checkpoint is of another log"
                     % (origin, tenant, expected))
    stated = manifest.get("checkpoint") or {}
    if stated.get("size") != size or stated.get("root") != tree_root.hex() or stated.get("origin") != origin:
        results.fail("manifest.json", "its checkpoint is not the one in checkpoint.txt")

    # 5. and 6. The leaves, their payloads and notices.
    check_leaves(root, manifest, size, tree_root, results)

    # 7. Consistency with the earliest checkpoint that covered the case.
    check_consistency(root, chain, handovers or [], ed, origin, size, tree_root, results)


def log_origin(key, tenant):
    """The origin of tenant's log, as rollcall names it."""
    return "%s/%s" % (key.name, tenant)


def parse_ranges(text):
    """`3, 7-9, 12` (how a `forgotten` leaf lists the leaves it erased) as
    [(3, 3), (7, 9), (12, 12)]; an empty text is no leaf."""
    if not isinstance(text, str):
        raise Broken("its list of erased leaves is not text")
    if text == "":
        return []
    out = []
    for part in text.split(", "):
        m = re.fullmatch(r"(0|[1-9][0-9]*)(?:-(0|[1-9][0-9]*))?", part)
        start = m and decimal(m.group(1))
        end = m and decimal(m.group(2) or m.group(1))
        if start is None or end is None or (m.group(2) is not None and end <= start):
            raise Broken("its list of erased leaves %r is not of the form `3, 7-9, 12`" % text)
        out.append((start, end))
    return out


class Line:
    """One line of leaves.jsonl, once its index, hash and proof checked."""

    def __init__(self, number, index, raw_line, leaf):
        self.number = number
        self.index = index
        self.line = raw_line
        self.leaf = leaf  # the parsed data; None when erased

    def where(self):
        return "leaf %d (leaves.jsonl line %d)" % (self.index, self.number)


def check_leaves(root, manifest, size, tree_root, results):
    try:
        lines = read(root, "leaves.jsonl").decode("utf-8").splitlines()
    except (Broken, UnicodeDecodeError) as e:
        results.fail("leaves.jsonl", str(e))
        return
    # First every line's index, hash and inclusion proof: the erasure
    # records (`forgotten` leaves) must be proved before they are believed.
    checked = []
    seen = {}
    for number, text in enumerate(lines, 1):
        where = "leaves.jsonl line %d" % number
        try:
            line = json.loads(text)
            index = line["index"]
            if type(index) is not int:
                raise Broken("the index %r is not a whole number" % (index,))
            where = "leaf %d (leaves.jsonl line %d)" % (index, number)
            if index < 0 or index >= size:
                raise Broken("the index %d is out of range: the checkpoint holds leaves 0 to %d" % (index, size - 1))
            if index in seen:
                raise Broken("the index %d is repeated: line %d holds it too" % (index, seen[index]))
            seen[index] = number
            stated = hex32(line["leaf_hash"], "leaf_hash")
            proof = [hex32(h, "a proof hash") for h in line["inclusion_proof"]]
            data = line["data"]
            if data is None:
                if line.get("erased") is not True:
                    raise Broken("has no data and is not marked erased")
                computed = stated
            else:
                computed = leaf_hash(data.encode("utf-8"))
                if computed != stated:
                    raise Broken("its data does not hash to its leaf_hash: the leaf was changed")
            if not verify_inclusion(index, size, computed, proof, tree_root):
                raise Broken("its inclusion proof does not lead to the checkpoint's root")
            checked.append(Line(number, index, line, None if data is None else json.loads(data)))
        except (Broken, ValueError, KeyError, TypeError, AttributeError) as e:
            results.fail(where, str(e) or type(e).__name__)
    erasures = erasure_records(checked, results)

    referenced = set()
    for c in checked:
        try:
            if c.leaf is None:
                results.ok(c.where(), erased(c.index, erasures))
                continue
            leaf = c.leaf
            if leaf.get("tenant") != manifest.get("tenant"):
                raise Broken("belongs to tenant %r, not %r" % (leaf.get("tenant"), manifest.get("tenant")))
            if c.line.get("kind") not in (None, leaf.get("kind")):
                raise Broken("its kind %r is not the one in its data" % c.line.get("kind"))
            extra = check_leaf_files(root, c.line, leaf, referenced)
            results.ok(c.where(), "%s: hash and inclusion in the checkpoint%s" % (leaf.get("kind"), extra))
        except (Broken, ValueError, KeyError, TypeError, AttributeError) as e:
            results.fail(c.where(), str(e) or type(e).__name__)
    for folder in ("raw/", "notices/"):
        for path in sorted(manifest_paths(manifest)):
            if path.startswith(folder) and path not in referenced:
                results.fail(path, "is not checked by any leaf in leaves.jsonl")
    if not lines:
        results.fail("leaves.jsonl", "holds no leaf")


def erasure_records(checked, results):
    """The `forgotten` leaves of the package (each proved against the
    checkpoint above): [(its index, when, the ranges of leaves it erased)]."""
    records = []
    for c in checked:
        if c.leaf is None or c.leaf.get("kind") != "forgotten":
            continue
        try:
            detail = c.leaf.get("detail") or {}
            recorded = (c.leaf.get("recorded_at") or {}).get("utc", "?")
            records.append((c.index, recorded, parse_ranges(detail.get("leaves"))))
        except (Broken, AttributeError) as e:
            results.fail(c.where(), str(e) or type(e).__name__)
    return records


def erased(index, erasures):
    """Why an erased leaf passes: an erasure recorded after it names it."""
    for at, when, ranges in erasures:
        if at > index and any(lo <= index <= hi for lo, hi in ranges):
            return ("erased (content deleted for privacy, recorded by leaf %d at %s); its hash is in the log at %d"
                    % (at, when, index))
    raise Broken("its content is absent (marked erased), but no erasure record in the package names it: "
                 "a leaf's content is erased only by `privacy forget`, which records the leaves it erased "
                 "in a later `forgotten` leaf")


def manifest_paths(manifest):
    return {e.get("path") for e in manifest.get("files", []) if isinstance(e, dict)}


def check_leaf_files(root, line, leaf, referenced):
    """Raw payloads and the notice against the hashes in the leaf's data."""
    located = {}
    for r in line.get("raw") or []:
        located[r["sha256"]] = r
    notes = []
    for r in leaf.get("raw") or []:
        found = located.get(r["sha256"])
        if found is None:
            raise Broken("its %s payload %s is neither in the package nor explained" % (r["role"], r["sha256"]))
        path = found.get("path")
        if path is None:
            # `privacy forget` erases a payload only with every leaf that
            # names it: a leaf that kept its content keeps its payloads.
            raise Broken("its %s payload %s is absent (marked %r), and no erasure record covers it: "
                         "an erasure deletes a leaf's content together with its payloads, and this leaf "
                         "kept its content" % (r["role"], r["sha256"], found.get("absent")))
        if not safe_path(path):
            raise Broken("a payload path %r is not safe" % path)
        content = read(root, path)
        if hashlib.sha256(content).hexdigest() != r["sha256"] or len(content) != r["size"]:
            raise Broken("%s is not its %s payload: SHA-256 or size differs from the leaf" % (path, r["role"]))
        referenced.add(path)
        notes.append("%s %s" % (r["role"], path))
    notice = line.get("notice")
    if notice is not None:
        if not safe_path(notice):
            raise Broken("the notice path %r is not safe" % notice)
        text = read(root, notice)
        if hashlib.sha256(text).hexdigest() != leaf.get("text_sha256"):
            raise Broken("%s is not the text the leaf names (text_sha256)" % notice)
        referenced.add(notice)
        notes.append("notice %s" % notice)
    return "".join("; " + n for n in notes)


def check_consistency(root, chain, handovers, ed, origin, size, tree_root, results):
    where = "consistency.json"
    try:
        proof = json.loads(read(root, "consistency.json").decode("utf-8"))
        first = proof.get("from")
        if first is None:
            if proof.get("reason") == "no_earlier_checkpoint":
                results.note(where, "no checkpoint covered the case before the export: "
                             "there is no earlier checkpoint to prove consistency from")
            else:
                results.note(where, "no consistency proof (%s)" % proof.get("reason"))
            return
        note_file = first["note"]
        if not safe_path(note_file):
            raise Broken("the note path %r is not safe" % note_file)
        try:
            text = verify_by_chain(read(root, note_file).decode("utf-8"), chain, handovers, ed, exact=False)[0]
        except (Broken, UnicodeDecodeError) as e:
            raise Broken("%s: %s" % (note_file, e))
        first_origin, first_size, first_root = parse_checkpoint(text)
        if first_origin != origin:
            raise Broken("its earlier checkpoint (%s) is of log %r, not %r" % (note_file, first_origin, origin))
        if first_size != first["size"] or first_root.hex() != first["root"]:
            raise Broken("its earlier checkpoint is not the one in %s" % note_file)
        to = proof["to"]
        if to["size"] != size or to["root"] != tree_root.hex():
            raise Broken("it does not prove against the checkpoint of checkpoint.txt")
        hashes = [hex32(h, "a proof hash") for h in proof["proof"]]
        if not verify_consistency(first_size, size, first_root, tree_root, hashes):
            raise Broken("the proof does not show that the log of %d leaves extends the one of %d" % (size, first_size))
        results.ok(where, "the log at export (%d leaves) extends the signed checkpoint of %d leaves in %s: nothing recorded by then was changed or removed" % (size, first_size, note_file))
    except (Broken, ValueError, KeyError, TypeError, AttributeError) as e:
        results.fail(where, str(e) or type(e).__name__)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Verify a rollcall evidence package offline.")
    parser.add_argument("package", nargs="?", default=os.path.dirname(os.path.abspath(__file__)),
                        help="the package folder (default: the folder of this file)")
    parser.add_argument("--openssl", action="store_true",
                        help="verify Ed25519 with the openssl command even if `cryptography` is installed")
    parser.add_argument("--fingerprint",
                        help="the key fingerprint the employer published (`rollcall evidence pubkey` prints "
                             "it): the package's key must be that one. Without it, the fingerprint is shown "
                             "to be confirmed at the terminal; with no terminal, the key check fails")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        ed = Ed25519(args.openssl)
    except EnvironmentError as e:
        print("cannot verify: %s" % e)
        return 2
    print("Verifying %s (Ed25519 by %s)" % (os.path.abspath(args.package), ed.name))
    results = Results()
    check(args.package, ed, results, args.fingerprint, confirm_at_terminal)
    if results.failed:
        print("RESULT: %d check(s) FAILED, %d passed. 结果：%d 项校验未通过。" % (results.failed, results.passed, results.failed))
        return 1
    print("RESULT: all %d checks passed. 结果：全部 %d 项校验通过。" % (results.passed, results.passed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
