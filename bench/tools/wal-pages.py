#!/usr/bin/env python3
"""Which tables and indexes the pages in a hookline WAL belong to.

Usage: wal-pages.py DIR

DIR holds a copy of a server's `hookline.sqlite` and `hookline.sqlite-wal`, taken while
it runs (e.g. during `hookline-bench ingest`: `cp $DATA/hookline.sqlite* DIR/` when the
WAL is a few MB; the writer starts the WAL over at about 8 MB). Reads the WAL's frame
headers first (the page number of every frame; a frame with a commit mark ends a
commit), then opens the copy with Python's sqlite3 and maps page numbers to B-trees
with the `dbstat` table. Prints the pages per commit for each B-tree, most first.
Pages freed since show as `?new`.
"""

import collections
import shutil
import sqlite3
import struct
import sys
import tempfile
from pathlib import Path


def frames(wal: bytes):
    _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(">8I", wal[:32])
    off = 32
    while off + 24 + page_size <= len(wal):
        pgno, commit, s1, s2 = struct.unpack(">4I", wal[off : off + 16])
        if (s1, s2) != (salt1, salt2):
            break  # left over from before the WAL started over
        yield pgno, commit != 0
        off += 24 + page_size


def main() -> None:
    d = Path(sys.argv[1])
    seen = list(frames((d / "hookline.sqlite-wal").read_bytes()))
    commits = max(1, sum(1 for _, c in seen if c))
    # Opening a database applies its WAL and deletes it on close: open a scratch copy.
    with tempfile.TemporaryDirectory() as tmp:
        for f in ("hookline.sqlite", "hookline.sqlite-wal"):
            shutil.copy(d / f, tmp)
        db = sqlite3.connect(Path(tmp) / "hookline.sqlite")
        names = dict(db.execute("SELECT pageno, name FROM dbstat"))
        db.close()
    count = collections.Counter(names.get(p, "?new") for p, _ in seen)
    print(f"{len(seen)} frames, {commits} commits")
    for name, n in count.most_common():
        print(f"{n / commits:8.2f} per commit {n:7d}  {name}")


if __name__ == "__main__":
    main()
