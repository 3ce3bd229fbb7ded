"""etcdctl endpoint status / health / hashkv, compaction, defrag, alarm list and snapshot save.

No lease is used in this module: a key's lease ID is part of the KeyValue bytes that HashKV hashes,
and lease IDs legitimately differ, so hashes are comparable only without them.
"""

import os

from .script import Cmd, assert_same_as_reference


def test_endpoint(reference, target):
    assert_same_as_reference(reference, target, "endpoint", [
        Cmd("endpoint health"),
        Cmd("endpoint health -w json"),
        Cmd("endpoint health -w table"),
        Cmd("endpoint status"),
        Cmd("endpoint status -w json"),
        Cmd("endpoint status -w table"),
        Cmd("put m/a 1"),
        Cmd("put m/b 2"),
        Cmd("put m/a 3"),
        Cmd("del m/b"),
        Cmd("endpoint status -w json"),
        Cmd("endpoint status"),
    ])


def test_hashkv(reference, target):
    """HashKV hashes the key-value history (revisions and KeyValue bytes), not the db file."""
    assert_same_as_reference(reference, target, "hashkv", [
        Cmd("put m/h 1 -w json", revision="r"),
        Cmd("put m/h 2"),
        Cmd("del m/h"),
        Cmd("endpoint hashkv"),
        Cmd("endpoint hashkv -w json"),
        Cmd("endpoint hashkv --rev {r}"),
        Cmd("endpoint hashkv --rev {r} -w table"),
        Cmd("put m/c 4"),
        Cmd("endpoint hashkv -w json"),
        Cmd("endpoint hashkv --rev {r} -w json"),
    ])


def test_compaction_and_defrag(reference, target):
    assert_same_as_reference(reference, target, "compaction", [
        Cmd("put m/x 1 -w json", revision="r"),
        Cmd("put m/x 2"),
        Cmd("compaction {r}"),
        Cmd("endpoint hashkv -w json"),
        Cmd("get m/x --rev {r} -w json"),
        Cmd("put m/d 5 -w json", revision="r2"),
        Cmd("compaction {r2} --physical"),
        Cmd("compaction {r2}"),
        Cmd("compaction 100000"),
        Cmd("endpoint hashkv --rev {r}"),
        Cmd("endpoint hashkv --rev 100000 -w json"),
        Cmd("endpoint hashkv -w json"),
        Cmd("defrag"),
        Cmd("defrag -w json"),
        Cmd("get m/ --prefix -w json"),
        Cmd("endpoint status -w json"),
    ])


def test_alarm_list(reference, target):
    assert_same_as_reference(reference, target, "alarm", [
        Cmd("alarm list"),
        Cmd("alarm list -w json"),
        Cmd("alarm disarm"),
        Cmd("alarm list"),
    ])


def test_snapshot_save(reference, target):
    """The file's format is the store's own (bbolt vs LMDB): only etcdctl's report is compared."""
    assert_same_as_reference(reference, target, "snapshot", [
        Cmd("snapshot save {tmp}/snap.db"),
        Cmd("snapshot save {tmp}/snap.db -w json"),
        Cmd("get m/ --prefix --keys-only"),
    ])
    for t in (reference, target):
        assert os.path.getsize(os.path.join(t.tmp_dir, "snap.db")) > 0, t.name
        assert not os.path.exists(os.path.join(t.tmp_dir, "snap.db.part")), t.name
