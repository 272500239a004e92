"""The orchestrator's file-digest cache (files a cache hit's step read): a same-size rewrite
whose mtime was put back still counts as a change (issue 10, mutation-testing gap)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from cellpipe.runner.orchestrate import _FileDigests
from cellpipe.storage.artifacts import digest_file


def test_a_same_size_rewrite_with_the_mtime_put_back_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "input.csv"
    path.write_bytes(b"a,b\n1,2\n")
    past = time.time() - 10  # outside the racy window: the digest is remembered
    os.utime(path, (past, past))
    digests = _FileDigests(tmp_path, tmp_path / "cache.json")
    first = digests.digest("input.csv")
    assert digests.entries["input.csv"][-1] == first  # remembered
    mtime, ctime = path.stat().st_mtime_ns, path.stat().st_ctime_ns
    deadline = time.monotonic() + 60
    while path.stat().st_ctime_ns == ctime:  # the ctime clock is coarse: wait for it to move
        with path.open("r+b") as f:
            f.write(b"x,y\n9,9\n")
        os.utime(path, ns=(mtime, mtime))
        assert time.monotonic() < deadline, "the ctime did not move in 60 s"
    assert path.stat().st_mtime_ns == mtime
    assert digests.digest("input.csv") == digest_file(path) != first
