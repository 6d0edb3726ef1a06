"""Hostile input for the package verifier (issue 16): property-based tests,
with Hypothesis, of the verify.py inside a real package.

    python3 tests/verify_fuzz.py PACKAGE_DIR FINGERPRINT

`tests/package.rs` makes the package and runs this. What must hold:

- every parser of verify.py, given any text, returns or raises its own
  `Broken`, nothing else;
- the whole check of a package with any file damaged (bytes replaced,
  removed, inserted, or the file cut short) finishes without an exception
  and fails: no damage passes.

Each property runs FUZZ_EXAMPLES examples (200 by default); with
FUZZ_MINUTES, each runs again and again until that time has passed.
"""

import contextlib
import importlib.util
import io
import os
import sys
import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

PACKAGE, FINGERPRINT = sys.argv[1], sys.argv[2]

spec = importlib.util.spec_from_file_location("verify", os.path.join(PACKAGE, "verify.py"))
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)
ED = verify.Ed25519(False)
KEY = verify.parse_pubkey(open(os.path.join(PACKAGE, "pubkey.txt"), encoding="utf-8").read())
FILES = sorted(verify.list_files(PACKAGE))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))

# Text that looks like what verify.py reads, and some that does not.
lines = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[0-9]{1,30}", fullmatch=True),
    # A number longer than Python converts by default (4,300 digits).
    st.integers(4200, 6000).map(lambda n: "7" * n),
    st.from_regex(r"[A-Za-z0-9+/=]{0,60}", fullmatch=True),
    st.sampled_from(["checkpoint", "old ", "new ", "time ", "\u2014 ", verify.HANDOVER_HEADER]),
)
texts = st.one_of(st.text(max_size=300), st.lists(lines, max_size=8).map("\n".join))


def refused_or_read(function, *args):
    try:
        function(*args)
    except verify.Broken:
        pass


def quiet_check():
    results = verify.Results()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        verify.check(PACKAGE, ED, results, FINGERPRINT, None)
    return results, out.getvalue()


fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(texts)
# Found by this test: a size of 4,301 digits made Python raise ValueError.
@example("o\n" + "7" * 4301 + "\nAAAA\n\n")
@example("7" * 4301)
@example("1-" + "7" * 4301)
def parsers_return_or_refuse(text):
    refused_or_read(verify.parse_checkpoint, text)
    refused_or_read(verify.parse_ranges, text)
    refused_or_read(verify.parse_verifier_key, text)
    refused_or_read(verify.parse_pubkey, text)
    refused_or_read(verify.verify_note, text, KEY, ED)
    refused_or_read(verify.parse_handover, text, ED)
    refused_or_read(verify.b64, text, "x")
    refused_or_read(verify.hex32, text, "x")
    verify.normalised_fingerprint(text)
    verify.safe_path(text)


@fuzz
@given(
    st.sampled_from(FILES),
    st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255), st.sampled_from("rdi")), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(0, 1 << 30)),
)
def damage_never_passes(path, edits, cut):
    full = os.path.join(PACKAGE, *path.split("/"))
    with open(full, "rb") as f:
        original = f.read()
    damaged = bytearray(original)
    for at, byte, how in edits:
        if not damaged:
            damaged.append(byte)
            continue
        i = at % len(damaged)
        if how == "r":
            damaged[i] = byte
        elif how == "d":
            del damaged[i]
        else:
            damaged.insert(i, byte)
    if cut is not None and damaged:
        del damaged[cut % len(damaged):]
    if bytes(damaged) == original:
        return
    try:
        with open(full, "wb") as f:
            f.write(damaged)
        results, out = quiet_check()
    finally:
        with open(full, "wb") as f:
            f.write(original)
    assert results.failed > 0, "damage to %s passed:\n%s" % (path, out)


def main():
    results, out = quiet_check()
    assert results.failed == 0, "the package must verify before it is damaged:\n" + out
    minutes = float(os.environ.get("FUZZ_MINUTES", "0"))
    for prop in (parsers_return_or_refuse, damage_never_passes):
        started, runs = time.monotonic(), 0
        while True:
            prop()
            runs += 1
            if time.monotonic() - started >= minutes * 60:
                break
        print("verify_fuzz: %s: %d examples in %.0f s, no finding"
              % (prop.__name__, runs * EXAMPLES, time.monotonic() - started))
    results, out = quiet_check()
    assert results.failed == 0, "the package was left damaged:\n" + out


if __name__ == "__main__":
    main()
