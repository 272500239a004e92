"""Issue 10: snapshots leave secrets out, record links without following them, and the store
is private to its owner (items 1, 13, 14 and the same-size rewrite that mutation testing found).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from cellpipe.storage.artifacts import LocalArtifactStore, clone_file, digest_file
from cellpipe.storage.snapshots import (
    LINK_MODE,
    FileEntry,
    IgnoreRules,
    UnsafeLinkError,
    WorkspaceScanner,
    attribute_changes,
    holds_credentials,
    restore_files,
)

SECRET = b"AWS_SECRET_ACCESS_KEY=do-not-copy-me\n"


def _store_holds(store_root: Path, needle: bytes) -> bool:
    return any(p.is_file() and needle in p.read_bytes() for p in store_root.rglob("*"))


def _age(path: Path, seconds: float = 10) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)


# -- item 1: secret-looking files --------------------------------------------------------------

SECRET_PATHS = [
    ".env", ".env.production", "config/.env.local", "server.pem", "tls/server.key", "cert.p12",
    "id_rsa", "id_rsa.pub", "keys/id_ed25519", "id_ecdsa", ".netrc", ".pypirc", ".npmrc",
    ".pgpass", ".git-credentials", "credentials", "sub/credentials",
    "application_default_credentials.json", "home/.docker/config.json", ".kube/config",
]  # fmt: skip
SECRET_FOLDERS = [".aws", ".ssh", ".gnupg", ".config/gcloud"]


def test_secret_files_and_folders_are_left_out_and_named(tmp_path):
    root = tmp_path / "ws"
    for rel in [*SECRET_PATHS, *(f"{d}/inside" for d in SECRET_FOLDERS)]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(SECRET)
    for rel in ("nb.py", "id_map.csv", "keys.md", "data/envelope.csv", "config/settings.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("not secret\n")
    store = LocalArtifactStore(tmp_path / "store")
    scanner = WorkspaceScanner(root, store)
    files = scanner.scan()
    assert sorted(files) == [
        "config/settings.yaml", "data/envelope.csv", "id_map.csv", "keys.md", "nb.py"
    ]  # fmt: skip
    assert set(scanner.secrets) == {*SECRET_PATHS, *(f"{d}/" for d in SECRET_FOLDERS)}
    assert not _store_holds(tmp_path / "store", b"do-not-copy-me")
    assert scanner.left_out_secrets() == scanner.secrets  # `check` walks without storing


def test_cellpipeignore_takes_a_secret_back(tmp_path):
    root = tmp_path / "ws"
    (root / ".aws").mkdir(parents=True)
    (root / ".aws" / "config").write_text("[default]\nregion = eu-west-1\n")
    (root / ".aws" / "credentials").write_bytes(SECRET)
    (root / ".env").write_bytes(SECRET)
    (root / ".env.example").write_text("TOKEN=\n")
    (root / ".cellpipeignore").write_text("!.env.example\n!.aws/\n")
    scanner = WorkspaceScanner(root, LocalArtifactStore(tmp_path / "s"))
    files = scanner.scan()
    # .aws/ is back, but its credentials file still matches `credentials`.
    assert sorted(files) == [".aws/config", ".cellpipeignore", ".env.example"]
    assert scanner.secrets == (".aws/credentials", ".env")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('[storage]\ndb_url = "postgresql://etl:hunter2@db/cp"\n', True),
        ('[storage]\ndb_url = "postgresql://db/cp?password=hunter2"\n', True),
        ('[storage]\ndb_url = "postgresql://etl:${CP_PASSWORD}@db/cp"\n', False),
        ('[storage]\ndb_url = "postgresql://etl@db/cp"\nartifacts_url = "s3://b/p"\n', False),
    ],
    ids=["userinfo-password", "query-password", "env-reference", "no-password"],
)
def test_cellpipe_toml_is_left_out_only_when_it_holds_a_password(tmp_path, text, secret):
    assert holds_credentials(text) is secret
    root = tmp_path / "ws"
    root.mkdir()
    (root / "cellpipe.toml").write_text(text)
    scanner = WorkspaceScanner(root, LocalArtifactStore(tmp_path / "s"))
    assert ("cellpipe.toml" not in scanner.scan()) is secret
    assert scanner.secrets == (("cellpipe.toml",) if secret else ())


def test_secret_rules_can_be_turned_off_for_syntax_tests():
    assert IgnoreRules([]).ignored(".env", is_dir=False)
    assert not IgnoreRules([], secrets=False).ignored(".env", is_dir=False)


# -- item 1: links and special files -----------------------------------------------------------


def test_links_are_recorded_never_followed_and_special_files_skipped(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(SECRET)
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "real.csv").write_text("a,b\n")
    (root / "escape").symlink_to(outside)
    (root / "environ").symlink_to("/proc/self/environ")
    (root / "alias.csv").symlink_to("data/real.csv")
    (root / "dangling").symlink_to("nowhere")
    (root / "linked-dir").symlink_to(tmp_path)
    os.mkfifo(root / "pipe")
    store = LocalArtifactStore(tmp_path / "store")
    files = WorkspaceScanner(root, store).scan()
    assert sorted(files) == ["alias.csv", "dangling", "data/real.csv", "environ", "escape",
                             "linked-dir"]  # fmt: skip
    assert files["escape"].link == str(outside)
    assert files["escape"].mode == LINK_MODE
    assert files["environ"].link == "/proc/self/environ"
    assert files["alias.csv"].link == "data/real.csv"
    assert files["data/real.csv"].link is None
    assert not _store_holds(tmp_path / "store", b"do-not-copy-me")
    assert FileEntry.from_json(files["escape"].to_json()) == files["escape"]


def _restore_case(tmp_path: Path, links: dict[str, str]) -> tuple[LocalArtifactStore, dict]:
    store = LocalArtifactStore(tmp_path / "store")
    body = b"a,b\n"
    files = {"data/real.csv": FileEntry(store.put_bytes(body), len(body), 0o644)}
    for rel, target in links.items():
        raw = target.encode()
        files[rel] = FileEntry(store.put_bytes(raw), len(raw), LINK_MODE, target)
    return store, files


def test_restore_recreates_links_inside_the_folder(tmp_path):
    store, files = _restore_case(tmp_path, {"alias.csv": "data/real.csv", "data/up": "../data"})
    out = tmp_path / "out"
    result = restore_files(store, files, out)
    assert result.files == 3
    assert str((out / "alias.csv").readlink()) == "data/real.csv"
    assert (out / "alias.csv").read_text() == "a,b\n"
    assert str((out / "data" / "up").readlink()) == "../data"


@pytest.mark.parametrize("target", ["/etc/shadow", "../../outside", "data/../../x"])
def test_restore_refuses_a_link_out_of_the_folder_and_says_it_is_a_link(tmp_path, target):
    store, files = _restore_case(tmp_path, {"escape": target})
    out = tmp_path / "out"
    with pytest.raises(UnsafeLinkError, match="symbolic link") as info:
        restore_files(store, files, out)
    assert "manifest" not in str(info.value)
    assert "--skip-outside-links" in (info.value.hint or "")
    assert not out.exists() or not any(out.iterdir())  # refused before writing anything
    result = restore_files(store, files, out, skip_outside_links=True)
    assert result.links_skipped == ("escape",)
    assert not (out / "escape").is_symlink()
    assert (out / "data" / "real.csv").read_text() == "a,b\n"


def test_restore_catches_a_climb_through_another_link(tmp_path):
    # `here -> .` keeps `here/here/../..` inside by its text, but not on the file system.
    store, files = _restore_case(tmp_path, {"here": ".", "climb": "here/here/../.."})
    out = tmp_path / "out"
    with pytest.raises(UnsafeLinkError, match="through other links"):
        restore_files(store, files, out)
    assert not (out / "climb").is_symlink()
    assert str((out / "here").readlink()) == "."


def test_restore_never_writes_a_file_the_ignore_rules_exclude(tmp_path):
    # A snapshot taken before the secret rules existed can hold `.env`: it stays out.
    store, files = _restore_case(tmp_path, {})
    files[".env"] = FileEntry(store.put_bytes(SECRET), len(SECRET), 0o600)
    files[".ssh/id_rsa"] = FileEntry(store.put_bytes(SECRET), len(SECRET), 0o600)
    files["scratch/x.tmp"] = FileEntry(store.put_bytes(b"x"), 1, 0o644)
    out = tmp_path / "out"
    result = restore_files(store, files, out, ignore=IgnoreRules(["scratch/"]))
    assert result.left_out == (".env", ".ssh/id_rsa", "scratch/x.tmp")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "data", "data/real.csv"
    ]  # fmt: skip


def test_restore_leaves_out_a_cellpipe_toml_with_a_password(tmp_path):
    store, files = _restore_case(tmp_path, {})
    text = b'[storage]\ndb_url = "postgresql://etl:hunter2@db/cp"\n'
    files["cellpipe.toml"] = FileEntry(store.put_bytes(text), len(text), 0o644)
    result = restore_files(store, files, tmp_path / "out")
    assert result.left_out == ("cellpipe.toml",)
    assert not (tmp_path / "out" / "cellpipe.toml").exists()


def test_a_file_swapped_for_a_link_after_the_walk_is_not_read(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_bytes(SECRET)
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "f.txt").write_text("harmless\n")
    scanner = WorkspaceScanner(root, LocalArtifactStore(tmp_path / "store"))
    walked, _ = scanner._walk()
    ((rel, st),) = walked
    (root / "data" / "f.txt").unlink()
    (root / "data").rmdir()
    (root / "data").symlink_to(outside)  # the folder is now a link out of the workspace
    with pytest.raises(OSError):  # noqa: PT011 (ELOOP or ENOTDIR, by platform)
        scanner._put_regular(rel, st)
    (root / "data").unlink()
    (root / "data").mkdir()
    (root / "data" / "f.txt").symlink_to(outside / "f.txt")
    with pytest.raises(OSError):  # noqa: PT011
        scanner._put_regular(rel, st)
    assert not _store_holds(tmp_path / "store", b"do-not-copy-me")


def test_restore_does_not_write_through_an_existing_link(tmp_path):
    store, files = _restore_case(tmp_path, {})
    victim = tmp_path / "victim.csv"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "real.csv").symlink_to(victim)
    restore_files(store, files, out, force=True)
    assert victim.read_text() == "keep me\n"
    assert not (out / "data" / "real.csv").is_symlink()


def test_restore_through_a_folder_link_out_says_it_is_a_link_not_a_damaged_manifest(tmp_path):
    store, files = _restore_case(tmp_path, {})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "data").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafeLinkError) as caught:
        restore_files(store, files, out, force=True)
    message = str(caught.value)
    assert "symbolic link" in message
    assert "data" in message
    assert "damaged" not in message
    assert list(elsewhere.iterdir()) == []


# -- item 1: a private store -------------------------------------------------------------------


def test_a_new_store_is_private_to_its_owner(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "data.csv").write_text("1,2\n")
    store_root = tmp_path / "state" / "artifacts"
    store = LocalArtifactStore(store_root)
    entry = WorkspaceScanner(root, store).scan()["data.csv"]
    path = store.path_for(entry.digest)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    for folder in (tmp_path / "state", store_root, path.parent, store_root / "tmp"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_team_store_keeps_the_read_bits_its_owner_gave(tmp_path):
    team = tmp_path / "team-store"
    team.mkdir()
    team.chmod(0o750)
    store = LocalArtifactStore(team)
    digest = store.put_bytes(b"shared")
    assert stat.S_IMODE(store.path_for(digest).stat().st_mode) == 0o440
    assert stat.S_IMODE(team.stat().st_mode) == 0o750  # never changed by cellpipe


def test_the_sqlite_database_file_is_created_0600(tmp_path):
    from cellpipe.storage.backends import open_metadata_store

    db = tmp_path / "meta.db"
    store = open_metadata_store(f"sqlite:///{db}")
    try:
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
    finally:
        store.close()


def test_open_project_makes_the_state_folder_private(tmp_path):
    from cellpipe.api import open_project
    from cellpipe.config import Settings

    settings = Settings.for_notebook(tmp_path / "nb.py", env={})
    settings.state_dir.mkdir(mode=0o755)  # as an older cellpipe left it
    settings.state_dir.chmod(0o755)
    with open_project(settings):
        pass
    assert stat.S_IMODE(settings.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((settings.state_dir / "cellpipe.db").stat().st_mode) == 0o600


# -- item 13: copies are clones or copies, never links -----------------------------------------


def test_a_stored_workspace_file_is_a_copy_an_in_place_edit_cannot_change(tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(b"0123456789" * 1000)
    store = LocalArtifactStore(tmp_path / "store")
    digest = store.put_file(src)
    stored = store.path_for(digest)
    assert stored.stat().st_ino != src.stat().st_ino
    assert stored.stat().st_nlink == 1
    with src.open("r+b") as f:  # edited in place: same inode
        f.write(b"XXXX")
    assert digest_file(stored) == digest
    store.verify(digest)
    assert sum(store.copies.values()) == 1
    assert set(store.copies) <= {"clone", "copy_file_range", "copy"}


def test_clone_file_copies_every_byte(tmp_path):
    src = tmp_path / "a"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    with src.open("rb") as fin, (tmp_path / "b").open("w+b") as fout:
        how = clone_file(fin, fout)
    assert how in ("clone", "copy_file_range", "copy")
    assert (tmp_path / "b").read_bytes() == src.read_bytes()


# -- mutation gap: a same-size rewrite with the mtime put back ---------------------------------


def _rewrite_keeping_size_and_mtime(path: Path, data: bytes, ctime_before: int) -> None:
    """Rewrite in place and put the mtime back, until the ctime shows the write.

    The kernel's ctime clock is coarse (a tick of a few ms); the loop waits for a condition,
    not for an amount of time, and a test that fails here reports the ctime never moving.
    """
    mtime = path.stat().st_mtime_ns
    deadline = time.monotonic() + 60
    while True:
        with path.open("r+b") as f:
            f.write(data)
        os.utime(path, ns=(mtime, mtime))
        if path.stat().st_ctime_ns != ctime_before:
            return
        assert time.monotonic() < deadline, "the ctime did not move in 60 s"


def test_a_same_size_rewrite_with_the_mtime_put_back_changes_the_digest(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    path = root / "model.cfg"
    path.write_bytes(b"alpha=1\n")
    _age(path)  # old enough to be cached (outside the racy window)
    store = LocalArtifactStore(tmp_path / "s")
    cache = tmp_path / "cache.json"
    scanner = WorkspaceScanner(root, store, cache_file=cache)
    first = scanner.scan()["model.cfg"]
    scanner.save_cache()
    again = WorkspaceScanner(root, store, cache_file=cache)
    assert again.scan()["model.cfg"] == first
    assert again.hashed == 0  # cached: only stat was looked at
    before = path.stat()
    _rewrite_keeping_size_and_mtime(path, b"alpha=9\n", before.st_ctime_ns)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino
    )  # fmt: skip
    changed = again.scan()["model.cfg"]
    assert again.hashed == 1
    assert changed.digest != first.digest
    assert changed.digest == digest_file(path)


# -- item 14: who changed what -----------------------------------------------------------------


def _entry(text: str) -> FileEntry:
    from cellpipe.storage.artifacts import digest_bytes

    return FileEntry(digest_bytes(text.encode()), len(text), 0o644)


def test_changes_are_attributed_to_the_step_whose_hook_saw_them():
    before = {"kept.txt": _entry("k"), "gone.txt": _entry("g"), "edited.txt": _entry("1")}
    after = {"kept.txt": _entry("k"), "edited.txt": _entry("2"), "a.txt": _entry("a"),
             "b.txt": _entry("b"), "sub.txt": _entry("s")}  # fmt: skip
    changes = attribute_changes(
        before, after, step="a", concurrent=["b", "c"],
        written={"a": ["a.txt", "edited.txt"], "b": ["b.txt"]},
    )  # fmt: skip
    assert changes["a.txt"] == {"change": "added", "by": ["a"], "attribution": "seen"}
    assert changes["edited.txt"] == {"change": "modified", "by": ["a"], "attribution": "seen"}
    assert changes["b.txt"] == {"change": "added", "by": ["b"], "attribution": "seen"}
    assert changes["gone.txt"] == {"change": "removed", "by": ["a", "b", "c"],
                                   "attribution": "shared"}  # fmt: skip
    assert "kept.txt" not in changes
    alone = attribute_changes(before, after, step="a", written={"a": []})
    assert alone["sub.txt"] == {"change": "added", "by": ["a"], "attribution": "unseen"}


def test_a_copy_on_write_file_system_gets_clones(tmp_path):
    """Needs a folder on XFS (reflink) or btrfs: CELLPIPE_TEST_REFLINK_DIR=/mnt/xfs."""
    folder = os.environ.get("CELLPIPE_TEST_REFLINK_DIR")
    if not folder:
        pytest.skip("set CELLPIPE_TEST_REFLINK_DIR to a folder on XFS or btrfs")
    import tempfile

    base = Path(tempfile.mkdtemp(dir=folder))
    try:
        src = base / "data.bin"
        src.write_bytes(os.urandom(1024 * 1024))
        store = LocalArtifactStore(base / "store")
        digest = store.put_file(src)
        assert store.copies == {"clone": 1}
        with src.open("r+b") as f:  # the clone is unshared on write: the stored copy stays
            f.write(b"XXXX")
        store.verify(digest)
    finally:
        import shutil

        shutil.rmtree(base)
