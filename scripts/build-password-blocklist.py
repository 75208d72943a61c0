#!/usr/bin/env python3
"""Builds domain/data/password-blocklist.txt, Warden's common-password blocklist.

Warden refuses passwords shorter than 15 characters for length alone, so only entries of 15
characters or more can ever match; this list holds nothing shorter. Matching (in
domain/src/values.rs) is whole-password and case-insensitive, so entries are lowercase.

Source: the ranked "passwords" frequency list shipped in the `zxcvbn` package on PyPI
(zxcvbn-python, MIT licence; the 30,000 most common passwords of the Xato corpus of ten
million leaked passwords, as compiled by Dropbox's zxcvbn), plus its `male_names` and
`female_names` lists for "iloveyou<name>" forms. Install it with `pip install zxcvbn` (or
point --zxcvbn-dir at an unpacked wheel), then run:

    python3 scripts/build-password-blocklist.py > domain/data/password-blocklist.txt

The output is deterministic for a given zxcvbn version. What goes in:
  1. corpus entries that are already 15+ characters;
  2. the most common short passwords repeated until they reach 15 characters
     (`passwordpassword`, `qwertyqwertyqwerty`), plus leetspeak forms of the doubled ones;
  3. common passwords with the digit runs and suffixes people append (`password123456789`);
  4. two common words or names glued together (`baseballfootball`, `iloveyoujennifer`);
  5. keyboard walks on a US QWERTY keyboard and digit patterns
     (`qwertyuiopasdfgh`, `1qaz2wsx3edc4rfv`, `1q2w3e4r5t6y7u8i`, `123456789987654321`),
     every prefix from 15 to 24 characters;
  6. a few famous passphrases (`thequickbrownfoxjumpsoverthelazydog`).
"""

import argparse
import sys

MIN_LEN = 15
MAX_LEN = 64

# How much of the ranked corpus each rule draws on: enough to cover ASVS 6.2.4's "top 3000
# passwords that match the policy" many times over, small enough to stay a few thousand
# lines (NIST SP 800-63B-4: "excessively large blocklists are of little incremental
# security benefit").
TOP_REPEAT = 2000
TOP_REPEAT_VARIANTS = 500
TOP_SUFFIX = 800
TOP_PAIR_WORDS = 70
TOP_NAMES = 300
TOP_LEET = 150

SUFFIXES = [
    "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789",
    "1234567890", "0987654321", "!", "!!", "1!", "123!", "01", "69", "007", "666", "777",
    "2000", "2010", "2015", "2020", "2021", "2022", "2023", "2024", "2025", "2026",
]
PREFIXES = ["1234567890", "123456789", "12345678", "123456", "my", "the", "ilove", "iloveyou"]
LOVE_FORMS = ["iloveyou", "ilove", "iloveu", "loveyou"]
FAMOUS = [
    "correct horse battery staple",
    "correcthorsebatterystaple",
    "the quick brown fox jumps over the lazy dog",
    "thequickbrownfoxjumpsoverthelazydog",
    "the quick brown fox",
    "thequickbrownfox",
    "to be or not to be",
    "tobeornottobethatisthequestion",
    "may the force be with you",
    "maytheforcebewithyou",
    "i love you so much",
    "iloveyousomuch",
    "iloveyouforever",
    "i love you forever",
    "letmeinletmein",
    "password password",
    "this is my password",
    "thisismypassword",
    "my password is password",
    "mypasswordispassword",
    "changemechangeme",
    "welcome to the jungle",
    "welcometothejungle",
    "open sesame open sesame",
    "hello world hello world",
    "helloworldhelloworld",
    "administrator123",
    "administrator1234",
    "supercalifragilisticexpialidocious",
]
LEET = str.maketrans({"a": "@", "o": "0", "e": "3", "i": "1", "s": "$"})
LEET_LIGHT = str.maketrans({"a": "@", "o": "0"})

ROWS = ["1234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm"]
SHIFT_DIGITS = "!@#$%^&*()"


def keyboard_walks():
    """Walk strings; every 15..24-character prefix of each is emitted."""
    walks = []
    rows = ROWS
    # Rows one after another, forwards and backwards, from the digits or from the letters.
    walks.append("".join(rows))
    walks.append("".join(rows[1:]))
    walks.append("".join(r[::-1] for r in rows))
    walks.append("".join(r[::-1] for r in rows[1:]))
    walks.append("".join(rows[1:])[::-1])
    walks.append(rows[1] + rows[0])
    walks.append(rows[0] + rows[1] + rows[0])
    walks.append(rows[1] + rows[1][::-1])
    walks.append(rows[2] + rows[1])
    walks.append(rows[3] + rows[2] + rows[1])
    # Columns: 1qaz 2wsx 3edc ...; top-down, bottom-up, zig-zag, letters only, shifted digits.
    cols = [rows[0][i] + rows[1][i] + (rows[2][i] if i < 9 else "") + (rows[3][i] if i < 7 else "")
            for i in range(10)]
    walks.append("".join(cols))
    walks.append("".join(c[::-1] for c in cols))
    walks.append("".join(c if i % 2 == 0 else c[::-1] for i, c in enumerate(cols)))
    walks.append("".join(c[1:] for c in cols))
    walks.append("".join(c[1:][::-1] for c in cols))
    walks.append("".join(SHIFT_DIGITS[i] + c[1:] for i, c in enumerate(cols)))
    walks.append("".join(c[:3] for c in cols))
    walks.append("".join(cols)[::-1])
    # Interleaved rows: 1q2w3e..., q1w2e3..., qawsed..., a1s2d3...
    for a, b in [(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 3), (1, 3)]:
        walks.append("".join(x + y for x, y in zip(rows[a], rows[b])))
    # Blocks of four or five keys per row: 1234qwerasdfzxcv, 12345qwertasdfgzxcvb.
    for width in (3, 4, 5, 6):
        walks.append("".join(r[:width] for r in rows))
        walks.append("".join(r[:width] for r in rows[1:]) + rows[0][:width])
        walks.append("".join(r[:width] for r in rows[1:]) + rows[0])
        walks.append("".join(r[:width] for r in rows[1:]) * 2)
        walks.append("".join(r[:width] + rows[0][:width] for r in rows[1:]))
    # Letter rows followed by digit runs.
    for r in rows[1:]:
        walks.append(r + "1234567890")
        walks.append("1234567890" + r)
        walks.append(r + "123456789")
    # Digit patterns.
    walks += [
        "123456789987654321",
        "12345678900987654321",
        "1234567890987654321",
        "98765432123456789",
        "987654321123456789",
        "1234567887654321",
        "123454321123454321",
        "112233445566778899",
        "111222333444555666777888999",
        "11223344556677889900",
        "123123123123123",
        "147258369147258369",
        "741852963741852963",
        "159753159753159753",
        "147852369147852369",
        "963852741963852741",
        "258456258456258456",
        "0123456789012345",
        "1357913579135791",
        "2468024680246802",
        "13579246801357924680",
    ]
    out = []
    for w in walks:
        for n in range(MIN_LEN, min(len(w), 24) + 1):
            out.append(w[:n])
    return out


def repeated(word):
    k = -(-MIN_LEN // len(word))  # ceil
    return word * max(k, 2)


def build(lists):
    ranked = [p.lower() for p in lists["passwords"]]
    short = [p for p in ranked if 3 <= len(p) < MIN_LEN]
    words = [p for p in short if p.isalpha() and len(p) >= 4]
    names = []
    for m, f in zip(lists["male_names"], lists["female_names"]):
        names += [m.lower(), f.lower()]

    sections = []

    sections.append(("corpus entries of 15+ characters", [p for p in ranked if len(p) >= MIN_LEN]))
    sections.append(("famous passphrases", FAMOUS))

    rep = []
    for i, p in enumerate(short[:TOP_REPEAT]):
        rep.append(repeated(p))
        if i < TOP_REPEAT_VARIANTS:
            rep.append(p * 2 + "1")
            rep.append(p * 2 + "123")
            rep.append(p + " " + p)
    sections.append(("common passwords repeated", rep))

    leet = []
    for w in words[:TOP_LEET]:
        for table in (LEET, LEET_LIGHT):
            lw = w.translate(table)
            if lw != w:
                leet.append(repeated(lw))
                leet.append(lw + lw + "1")
        leet.append(w.capitalize() * 2)
    sections.append(("leetspeak forms of repeated common words", leet))

    suf = []
    for p in short[:TOP_SUFFIX]:
        for s in SUFFIXES:
            suf.append(p + s)
        for s in PREFIXES:
            suf.append(s + p)
    sections.append(("common passwords with common prefixes and suffixes", suf))

    pairs = []
    top_words = words[:TOP_PAIR_WORDS]
    for a in top_words:
        for b in top_words:
            if a != b:
                pairs.append(a + b)
    for n in names[:TOP_NAMES]:
        for form in LOVE_FORMS:
            pairs.append(form + n)
            pairs.append(n + form)
        pairs.append("iloveyou" + n + "1")
    sections.append(("two common words or names together", pairs))

    sections.append(("keyboard walks and digit patterns", keyboard_walks()))

    seen = set()
    out = []
    for title, entries in sections:
        kept = []
        for e in entries:
            e = e.strip().lower()
            if not (MIN_LEN <= len(e) <= MAX_LEN) or e.startswith("#") or e in seen:
                continue
            seen.add(e)
            kept.append(e)
        out.append((title, kept))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zxcvbn-dir", help="directory containing the zxcvbn package")
    args = ap.parse_args()
    if args.zxcvbn_dir:
        sys.path.insert(0, args.zxcvbn_dir)
    import zxcvbn  # noqa: E402
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # noqa: E402

    version = getattr(zxcvbn, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version
            version = dist_version("zxcvbn")
        except Exception:  # an unpacked wheel on sys.path has no metadata
            version = "unknown"

    sections = build(FREQUENCY_LISTS)
    total = sum(len(s) for _, s in sections)
    w = sys.stdout.write
    w("# Warden common-password blocklist. Generated by scripts/build-password-blocklist.py; do\n")
    w("# not edit by hand, rebuild instead.\n")
    w("#\n")
    w(f"# Source: the `zxcvbn` package from PyPI (zxcvbn-python {version}, MIT licence): its ranked\n")
    w("# list of the 30,000 most common passwords (Xato corpus of 10 million leaked passwords) and\n")
    w("# its first-name lists. Warden refuses passwords under 15 characters for length alone, so\n")
    w("# this list holds only entries of 15+ characters: corpus entries that long already, common\n")
    w("# passwords repeated or combined the way people stretch them (passwordpassword,\n")
    w("# password123456789, iloveyoujennifer), leetspeak forms, famous passphrases, and keyboard\n")
    w("# walks (qwertyuiopasdfgh, 1qaz2wsx3edc4rfv).\n")
    w("#\n")
    w("# Matching is whole-password and case-insensitive; `#` starts a comment. Repetitions of a\n")
    w("# single short unit (three or more times) and plain ascending runs are also refused by\n")
    w("# code (domain/src/values.rs), list or not.\n")
    w(f"# {total} entries.\n")
    for title, entries in sections:
        w(f"\n# --- {title} ({len(entries)})\n")
        for e in entries:
            w(e + "\n")


if __name__ == "__main__":
    main()
