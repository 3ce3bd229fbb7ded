"""etcdctl lease and watch: each target prints what etcd 3.4.23 prints.

The scripts run in this order on one member per target. The live watch (no --rev) must come last:
establishing it takes a timing-dependent number of writes (see script.Watch).
"""

from .script import Cmd, Watch, assert_same_as_reference

TXN_MULTI_PUT = """

put w/x 1
put w/y 2
put w/z 3

"""


def test_lease(reference, target):
    assert_same_as_reference(reference, target, "lease", [
        Cmd("lease grant 600", grant="long"),
        Cmd("lease grant 300 -w json"),
        Cmd("lease grant 1", grant="short"),  # below the minimum TTL: granted with the minimum
        Cmd("lease revoke {short}"),
        Cmd("put l/a A --lease {long}"),
        Cmd("put l/b B --lease {long} -w json"),
        Cmd("put l/free F"),
        Cmd("get l/ --prefix -w json"),
        Cmd("lease timetolive {long}"),
        Cmd("lease timetolive {long} --keys"),
        Cmd("lease timetolive {long} --keys -w json"),
        Cmd("lease keep-alive --once {long}"),
        Cmd("lease keep-alive --once {long} -w json"),
        Cmd("lease list"),
        Cmd("lease list -w json"),
        Cmd("lease revoke {long}"),
        Cmd("get l/ --prefix"),
        Cmd("lease timetolive {long}"),
        Cmd("lease timetolive {long} -w json"),
        Cmd("lease revoke {long}"),
        Cmd("lease keep-alive --once {long}"),
        Cmd("lease timetolive 1234abcd --keys"),
        Cmd("lease grant 9000000001"),
        Cmd("lease grant 9000000000 -w json"),
        Cmd("lease list"),
    ])


def test_lease_expiry(reference, target):
    """A lease that is not kept alive expires, and its keys go in one revision."""
    assert_same_as_reference(reference, target, "lease_expiry", [
        Cmd("lease grant 2", grant="brief"),
        Cmd("put x/1 one --lease {brief}"),
        Cmd("put x/2 two --lease {brief}"),
        Cmd("lease timetolive {brief}", until="already expired"),
        Cmd("get x/ --prefix -w json"),
        Cmd("lease list"),
    ])


def test_watch_history(reference, target):
    """Watches that start at a past revision (--rev) replay history, then follow new writes."""
    assert_same_as_reference(reference, target, "watch_history", [
        Cmd("put w/a 1 -w json", revision="start"),
        Cmd("put w/b 2"),
        Cmd("put w/a 3"),
        Cmd("del w/b"),
        Cmd("put other 0"),
        Watch("watch w/ --prefix --rev {start}", end_keys=("w/end",)),
        Watch("watch w/a --rev {start} --prev-kv -w json", end_keys=("w/a",)),
        Watch("watch w/a w/c --rev {start} -w json", end_keys=("w/b",)),
        # Two watchers on one stream (interactive etcdctl).
        Watch("watch -i -w json", end_keys=("w/a", "other"), unordered=True,
              stdin="watch w/a --rev {start} --prev-kv\nwatch other --rev {start}\n"),
        Cmd("put w/b 4 -w json", revision="later"),
        Watch("watch w/ --prefix --prev-kv --rev {later}", end_keys=("w/end",), writes=(
            Cmd("put w/c 5"),
            Cmd("del w/c --prev-kv"),
            Cmd("txn", stdin=TXN_MULTI_PUT),
            Cmd("del w/x w/zz"),
            Cmd("lease grant 600", grant="lease"),
            Cmd("put w/leased L --lease {lease}"),
            Cmd("lease revoke {lease}"),
        )),
        Watch("watch w/ --prefix --prev-kv --rev {later} -w json", end_keys=("w/end",)),
    ])


def test_watch_compacted(reference, target):
    """A watch from a compacted revision is cancelled by the server, and etcdctl says why."""
    assert_same_as_reference(reference, target, "watch_compacted", [
        Cmd("put w/compact old -w json", revision="old"),
        Cmd("put w/compact me -w json", revision="now"),
        Cmd("compaction {now}"),
        Watch("watch w/ --prefix --rev {old}", end_keys=("w/end",)),
        Watch("watch w/ --prefix --rev {old} -w json", end_keys=("w/end",)),
        Watch("watch w/compact --rev {now} --prev-kv", end_keys=("w/compact",)),
    ])


def test_watch_live(reference, target):
    """A watch without --rev sees the writes made after it started. Must run last (see above)."""
    assert_same_as_reference(reference, target, "watch_live", [
        Watch("watch live/ --prefix --prev-kv", end_keys=("live/end",), live=True, writes=(
            Cmd("put live/a 1"),
            Cmd("put live/a 2"),
            Cmd("del live/a"),
            Cmd("put other 1"),
            Cmd("put live/b 3"),
        )),
    ])
