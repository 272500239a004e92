"""Snapshots: ignore rules, the incremental scanner, the size limit, manifests and restore."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cellpipe.errors import CellpipeError
from cellpipe.storage.artifacts import LocalArtifactStore
from cellpipe.storage.lineage import SnapshotKind
from cellpipe.storage.snapshots import (
    IgnoreRules,
    WorkspaceScanner,
    WorkspaceTooLargeError,
    _glob_regex,
    _matcher,
    manifest_files,
    parse_size,
    read_manifest,
    restore_files,
    store_manifest,
)


def _age(path: Path, seconds: float = 10) -> None:
    """Move the mtime into the past so the scanner may cache the file (not racy)."""
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.mark.parametrize(
    ("rules", "path", "is_dir", "ignored"),
    [
        (["*.tmp"], "a/b/c.tmp", False, True),
        (["*.tmp", "!keep.tmp"], "keep.tmp", False, False),
        (["data/"], "data", True, True),
        (["data/"], "data", False, False),
        (["/top.txt"], "sub/top.txt", False, False),
        (["/top.txt"], "top.txt", False, True),
        (["sub/*.csv"], "sub/x.csv", False, True),
        (["sub/*.csv"], "other/sub/x.csv", False, False),
        (["**/logs"], "a/b/logs", True, True),
        (["# comment", "", "x"], "# comment", False, False),
        (["\\#hash"], "#hash", False, True),
        (["file[0-9].txt"], "file7.txt", False, True),
        (["!.cellpipe/"], ".cellpipe", True, True),
        ([], "deep/__pycache__", True, True),
        ([], ".ipynb_checkpoints", True, True),
        ([], ".git", True, True),
    ],
    ids=[
        "glob-any-depth", "negation", "dir-only", "dir-only-not-file", "anchored-miss",
        "anchored-hit", "slash-anchors", "slash-anchors-miss", "double-star", "comment",
        "escaped-hash", "class", "always-ignored-wins", "pycache", "checkpoints", "git",
    ],
)  # fmt: skip
def test_ignore_rules(rules, path, is_dir, ignored):
    assert IgnoreRules(rules).ignored(path, is_dir=is_dir) is ignored


@pytest.mark.parametrize(
    "pattern",
    ["data", "a/b", "*.tmp", "*.db-wal", "x*", "*.[ch]", "**/c", "id_rsa*", ".env.*",
     "service-account*.json", "**/.docker/config.json", "**/a/b"],
)  # fmt: skip
@pytest.mark.parametrize("anchored", [True, False])
def test_plain_patterns_match_exactly_as_their_regex(pattern: str, anchored: bool) -> None:
    """Plain names and ``*.suffix`` skip the regex; they must agree with it on every path."""
    paths = [
        "data", "x/data", "xdata", "data/x", "a/b", "z/a/b", "a/bb", "f.tmp", "d/f.tmp",
        "f.tmp/x", ".tmp", "f.tmpx", "m.db-wal", "n/m.db-wal", "x", "xy", "y/x1", "k.c",
        "k.h", "c", "q/c", "id_rsa", "id_rsa.pub", "k/id_rsa_old", "xid_rsa", "id_rs",
        ".env", ".env.", ".env.local", "d/.env.prod", "x.env.local", "service-account.json",
        "g/service-account-prod.json", "service-account.jso", "service-accoun.json",
        ".docker/config.json", "h/.docker/config.json", "h.docker/config.json",
        "docker/config.json", "q/a/b", "qa/b",
    ]  # fmt: skip
    fast = _matcher(pattern, anchored=anchored)
    slow = _glob_regex(pattern, anchored=anchored).match
    for path in paths:
        assert bool(fast(path)) is bool(slow(path)), (pattern, anchored, path)


def _workspace(root: Path, count: int = 20) -> None:
    (root / "data").mkdir(parents=True)
    for i in range(count):
        f = root / "data" / f"f{i}.txt"
        f.write_text(f"file {i}\n")
        _age(f)
    (root / "nb.py").write_text("# %%\nx = 1\n")
    _age(root / "nb.py")
    (root / ".cellpipe").mkdir()
    (root / ".cellpipe" / "junk").write_text("never scanned")


def test_scanner_hashes_only_changed_files(tmp_path):
    root = tmp_path / "ws"
    _workspace(root)
    store = LocalArtifactStore(tmp_path / "store")
    cache = tmp_path / "cache.json"
    scanner = WorkspaceScanner(root, store, cache_file=cache)
    first = scanner.scan()
    assert scanner.hashed == 21
    assert ".cellpipe/junk" not in first
    assert first["data/f3.txt"].size == len("file 3\n")
    scanner.save_cache()

    again = WorkspaceScanner(root, store, cache_file=cache)  # a new run: cache from disk
    assert again.scan() == first
    assert again.hashed == 0

    (root / "data" / "f3.txt").write_text("changed!\n")
    changed = again.scan()
    assert again.hashed == 1
    assert changed["data/f3.txt"].digest != first["data/f3.txt"].digest
    (root / "data" / "f4.txt").unlink()
    assert "data/f4.txt" not in again.scan()


def test_ignore_file_is_honoured(tmp_path):
    root = tmp_path / "ws"
    _workspace(root)
    (root / ".cellpipeignore").write_text("data/\n!data/f1.txt\n")
    files = WorkspaceScanner(root, LocalArtifactStore(tmp_path / "s")).scan()
    # A file inside an ignored folder stays ignored, as in git.
    assert sorted(files) == [".cellpipeignore", "nb.py"]


def test_size_limit_names_the_biggest_files(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "big.bin").write_bytes(b"x" * 5000)
    (root / "small.txt").write_text("y")
    scanner = WorkspaceScanner(root, LocalArtifactStore(tmp_path / "s"), max_bytes=1000)
    with pytest.raises(WorkspaceTooLargeError, match=r"over the snapshot limit.*big\.bin") as info:
        scanner.scan()
    assert ".cellpipeignore" in (info.value.hint or "")
    assert "CELLPIPE_SNAPSHOT_MAX_BYTES" in (info.value.hint or "")
    assert not (tmp_path / "s").exists()  # nothing was copied before the check


def test_parse_size():
    assert parse_size("1000") == 1000
    assert parse_size("2G") == 2 * 1024**3
    assert parse_size("1.5MiB") == int(1.5 * 1024**2)
    with pytest.raises(CellpipeError, match="not a size"):
        parse_size("lots")


def test_manifest_round_trip_and_restore(tmp_path):
    root = tmp_path / "ws"
    _workspace(root, count=3)
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    store = LocalArtifactStore(tmp_path / "s")
    files = WorkspaceScanner(root, store).scan()
    digest, count, size = store_manifest(
        store, files=files, run_id="r1", step="", kind=SnapshotKind.START, notebook="nb.py",
        env={"python": "3.11", "packages": {}},
    )  # fmt: skip
    again, _, _ = store_manifest(
        store, files=files, run_id="r1", step="", kind=SnapshotKind.START, notebook="nb.py",
        env={"python": "3.11", "packages": {}},
    )  # fmt: skip
    assert again == digest  # content-addressed: the same snapshot costs nothing
    manifest = read_manifest(store, digest)
    assert manifest["environment"]["python"] == "3.11"
    assert count == len(files)
    assert size == sum(f.size for f in files.values())

    target = tmp_path / "out"
    assert restore_files(store, manifest_files(store, manifest), target).files == count
    assert (target / "data" / "f2.txt").read_text() == "file 2\n"
    assert (target / "run.sh").stat().st_mode & 0o777 == 0o755

    with pytest.raises(CellpipeError, match="not empty"):
        restore_files(store, manifest_files(store, manifest), target)
    (target / "data" / "f2.txt").write_text("edited")
    restore_files(store, manifest_files(store, manifest), target, force=True)
    assert (target / "data" / "f2.txt").read_text() == "file 2\n"


def test_recent_files_are_not_cached(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "fresh.txt").write_text("a")
    scanner = WorkspaceScanner(root, LocalArtifactStore(tmp_path / "s"))
    scanner.scan()
    scanner.scan()
    assert scanner.hashed == 1  # modified just now: hashed again (a same-tick rewrite)


@pytest.mark.parametrize("is_dir", [True, False])
def test_the_grouped_secret_rules_agree_with_one_regex_per_rule(is_dir: bool) -> None:
    """`IgnoreRules` tests the secret rules in groups (a set, tuples); each rule alone decides."""
    from cellpipe.storage.snapshots import SECRET_IGNORED

    paths = [
        ".env", "a/.env", ".env.x", "x.env", ".envrc", "k.pem", "d/k.key", "key", "id_rsa",
        "id_rsa.pub", "id_map.csv", "d/id_ed25519_sk", ".ssh", "h/.ssh", ".aws", ".config/gcloud",
        "u/.config/gcloud", "gcloud", "credentials", "x/credentials", "credentials.json",
        "credentials.txt", "service-account-1.json", "service-account.yaml", ".netrc", "_netrc",
        ".docker/config.json", "u/.docker/config.json", "config.json", ".kube/config",
        "u/.kube/config", "config", "kubeconfig", "secrets.toml", "app/secrets.toml", "data.csv",
    ]  # fmt: skip
    rules = [(p.rstrip("/"), p.endswith("/")) for p in SECRET_IGNORED]
    grouped = IgnoreRules([])
    for path in paths:
        expected = any(
            _glob_regex(text.lstrip("/"), anchored="/" in text).match(path)
            and (is_dir or not dir_only)
            for text, dir_only in rules
        )
        assert (grouped.reason(path, is_dir=is_dir) == "secret") is expected, path
