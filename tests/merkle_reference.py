"""An independent RFC 6962 Merkle tree, written from the RFC's text (§2.1),
to cross-check rollcall's Rust implementation (tests/merkle.rs).

Reads JSON from stdin: {"cases": [[n, m], ...]}; leaf i is the bytes of
"leaf {i}". Writes, per case, the root of the first n leaves, the audit path
of leaf m (m < n) and the consistency proof from the first m leaves to n, all
in hex.
"""
import hashlib
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


def main():
    spec = json.load(sys.stdin)
    out = []
    for n, m in spec["cases"]:
        d = [("leaf %d" % i).encode() for i in range(n)]
        out.append({
            "n": n,
            "m": m,
            "root": mth(d).hex(),
            "path": [h.hex() for h in path(m, d)] if m < n else None,
            "consistency": [h.hex() for h in proof(m, d)],
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
