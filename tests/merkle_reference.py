"""An independent RFC 6962 Merkle tree, written from the RFC's text (§2.1),
to cross-check rollcall's Rust implementation (tests/merkle.rs).

Reads JSON from stdin:

    {"leaves": [hex, ...],                      # the leaf data, in order
     "cases": [{"n": n, "inclusion": [m, ...], "consistency": [m, ...]}],
     "verifier": "path/to/verify.py" or null}

and writes, per case: the root of the first n leaves, the audit path of each
leaf m in `inclusion` (m < n), and for each m in `consistency` (0 <= m <= n)
the root of the first m leaves and the consistency proof from them to n, all
in hex.

With a verifier (the package's stand-alone verify.py), its RFC 9162
verification functions must accept every proof computed here and refuse the
same proof with one hash changed, or checked against the wrong leaf or root;
"verifier" in the output lists what it got wrong (empty when nothing).
"""
import hashlib
import importlib.util
import json
import sys


def leaf(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def k_of(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d):
    if len(d) == 0:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return leaf(d[0])
    k = k_of(len(d))
    return node(mth(d[:k]), mth(d[k:]))


def path(m, d):
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m, d, b):
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = k_of(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def proof(m, d):
    if m == 0 or m == len(d):
        return []
    return subproof(m, d, True)


def load_verifier(file):
    spec = importlib.util.spec_from_file_location("package_verifier", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flip(h):
    return bytes([h[0] ^ 1]) + h[1:]


def check_verifier(v, n, d, root, paths, consistency):
    """What verify.py gets wrong about these proofs (a list of strings)."""
    wrong = []
    for m, p in paths:
        lh = leaf(d[m])
        if not v.verify_inclusion(m, n, lh, p, root):
            wrong.append("refused the path of %d in %d" % (m, n))
        if p and v.verify_inclusion(m, n, lh, [flip(p[0])] + p[1:], root):
            wrong.append("took a changed path of %d in %d" % (m, n))
        if v.verify_inclusion(m, n, flip(lh), p, root):
            wrong.append("took a wrong leaf at %d in %d" % (m, n))
        if n > 1 and v.verify_inclusion((m + 1) % n, n, lh, p, root) and d[m] != d[(m + 1) % n]:
            wrong.append("took leaf %d at index %d in %d" % (m, (m + 1) % n, n))
    for m, root_m, p in consistency:
        if m == 0 or m == n:
            continue  # nothing to prove: verify.py is never given these
        if not v.verify_consistency(m, n, root_m, root, p):
            wrong.append("refused the consistency %d -> %d" % (m, n))
        if v.verify_consistency(m, n, flip(root_m), root, p):
            wrong.append("took a wrong old root %d -> %d" % (m, n))
        if v.verify_consistency(m, n, root_m, flip(root), p):
            wrong.append("took a wrong new root %d -> %d" % (m, n))
        changed = list(p)
        changed[len(p) // 2] = flip(changed[len(p) // 2])
        if v.verify_consistency(m, n, root_m, root, changed):
            wrong.append("took a changed proof %d -> %d" % (m, n))
    return wrong


def main():
    spec = json.load(sys.stdin)
    data = [bytes.fromhex(h) for h in spec["leaves"]]
    verifier = load_verifier(spec["verifier"]) if spec.get("verifier") else None
    out = []
    for case in spec["cases"]:
        n = case["n"]
        d = data[:n]
        root = mth(d)
        paths = [(m, path(m, d)) for m in case["inclusion"]]
        consistency = [(m, mth(d[:m]), proof(m, d)) for m in case["consistency"]]
        result = {
            "n": n,
            "root": root.hex(),
            "paths": [[h.hex() for h in p] for _, p in paths],
            "consistency": [
                {"m": m, "root": r.hex(), "proof": [h.hex() for h in p]}
                for m, r, p in consistency
            ],
        }
        if verifier is not None:
            result["verifier"] = check_verifier(verifier, n, d, root, paths, consistency)
        out.append(result)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
