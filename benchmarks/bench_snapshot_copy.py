"""Benchmark of the first snapshot of a workspace (issue 10, item 13): how files enter the store.

The first snapshot of a run in a fresh project copies every workspace file into the artifact
store. Since issue 10 a file enters the store through `clone_file`: a copy-on-write clone
(``FICLONE``: btrfs, XFS, bcachefs) where the file system makes one, else
``os.copy_file_range`` (a copy inside the kernel), else a read/write loop; the copy is then
hashed. Before, one Python loop read, hashed and wrote each 1 MiB chunk (`_copy_hashing`).

The workspace: ``--mb`` MB (default 200) of random bytes in 5 MB files, in a temporary folder
beside the store (``--dir``, default the system's temporary folder: one file system, as
``.cellpipe/`` beside a notebook). Each repeat scans it into a fresh store with the current
code and with the previous copy loop (a subclass whose ``put_file`` is the old one), taking
turns, and reports the median; also how each file was copied and the file system type
(``stat -f``). The source files stay in the page cache across repeats (a warm workspace, as
right after the notebook wrote them); the stores are deleted after each repeat.

Run: ``.venv/bin/python benchmarks/bench_snapshot_copy.py [--mb 200] [--repeats 5]
[--dir PATH] [--no-write]``; results go to its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _results import write_section

from cellpipe.storage.artifacts import (
    _ALGORITHM,
    LocalArtifactStore,
    _copy_hashing,
)
from cellpipe.storage.protocols import ArtifactDigest
from cellpipe.storage.snapshots import WorkspaceScanner

FILE_MB = 5


class _LoopStore(LocalArtifactStore):
    """The store as before issue 10: one Python loop reads, hashes and writes each chunk."""

    def put_file(self, path: Path, *, move: bool = False) -> ArtifactDigest:
        fd, tmp_name = tempfile.mkstemp(dir=self.scratch_dir(), prefix="put-")
        tmp = Path(tmp_name)
        try:
            with Path(path).open("rb") as fin, os.fdopen(fd, "wb") as fout:
                digest = ArtifactDigest(f"{_ALGORITHM}:{_copy_hashing(fin, fout)}")
            if not self._has_good(digest):
                self._publish(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)
        return digest


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(
            ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _workspace(root: Path, megabytes: int) -> int:
    root.mkdir(parents=True)
    total = 0
    for i in range(max(1, megabytes // FILE_MB)):
        data = os.urandom(FILE_MB * 1024 * 1024)
        (root / f"part-{i:03d}.bin").write_bytes(data)
        total += len(data)
    return total


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def _first_snapshot(root: Path, store: LocalArtifactStore) -> tuple[float, int]:
    """Return the seconds of the scan and the disk space the store took (statvfs)."""
    os.sync()
    free = _free(root)
    start = time.perf_counter()
    WorkspaceScanner(root, store).scan()
    elapsed = time.perf_counter() - start
    os.sync()
    return elapsed, free - _free(root)


def _measure(folder: Path | None, megabytes: int, repeats: int) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="cellpipe-bench-copy-", dir=folder))
    try:
        root = base / "ws"
        total = _workspace(root, megabytes)
        times: dict[str, list[float]] = {"clone_file (now)": [], "copy loop (before)": []}
        space: dict[str, list[int]] = {name: [] for name in times}
        methods: dict[str, int] = {}
        for i in range(repeats):
            order = [("clone_file (now)", LocalArtifactStore), ("copy loop (before)", _LoopStore)]
            for name, kind in order if i % 2 == 0 else order[::-1]:
                store_dir = base / f"store-{i}-{kind.__name__}"
                store = kind(store_dir)
                elapsed, used = _first_snapshot(root, store)
                times[name].append(elapsed)
                space[name].append(used)
                for how, count in store.copies.items():
                    methods[how] = methods.get(how, 0) + count
                shutil.rmtree(store_dir)
        return {"fs": _fs_type(base), "total": total, "times": times, "space": space,
                "methods": methods}  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--dir", type=Path, action="append", help="where to build it (repeatable; one per fs)"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rows = []
    notes = []
    mib = args.mb
    for folder in args.dir or [None]:
        found = _measure(folder, args.mb, args.repeats)
        mib = int(found["total"]) / 1024**2  # type: ignore[call-overload]
        times: dict[str, list[float]] = found["times"]  # type: ignore[assignment]
        space: dict[str, list[int]] = found["space"]  # type: ignore[assignment]
        for name, values in times.items():
            median = statistics.median(values)
            rows.append(
                f"| {found['fs']} | {name} | {median:.2f} s | {mib / median:.0f} MiB/s | "
                f"{min(values):.2f}-{max(values):.2f} s | "
                f"{statistics.median(space[name]) / 1024**2:.0f} MiB |"
            )
        methods: dict[str, int] = found["methods"]  # type: ignore[assignment]
        notes.append(f"{found['fs']}: " + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())))
    section = "\n".join(
        [
            "## First snapshot of a workspace: clone or copy (issue 10, item 13)",
            "",
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores shared with other work (load average at the end "
            f"{os.getloadavg()[0]:.1f}). Workspace: {mib:.0f} MiB of random bytes in "
            f"{FILE_MB} MB files (warm page cache), the store beside it on the same file "
            f"system; {args.repeats} repeats, each into a fresh store, median. Space: what "
            "the file system lost while the store filled (`statvfs`, after `sync`). "
            "`ext2/ext3` is how `stat -f` names ext4.",
            "",
            "| file system | how files enter the store | median | throughput | range | space |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "How the current code copied the files: " + "; ".join(notes) + ". Where the file "
            "system cannot clone, `FICLONE` fails at once and `copy_file_range` copies inside "
            "the kernel; on XFS (reflink) or btrfs the clone shares the blocks, so the store "
            "costs no space until either side changes (the file is still read once, to hash "
            "the copy). Never a hard link: an in-place edit of the workspace file would change "
            "the stored copy.",
        ]
    )
    print(section)
    if not args.no_write:
        write_section("snapshot-copy", section)


if __name__ == "__main__":
    main()
