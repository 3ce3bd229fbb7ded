"""etcdctl put / get / del / txn, and their errors: each target prints what etcd 3.4.23 prints.

The scripts run in this order on one member per target; revisions carry over between them.
"""

from .script import Cmd, assert_same_as_reference

TXN_SUCCESS = """ver("k/a") > "0"
c("k/a") > "1"
m("k/a") != "0"
val("k/a") = "A2"

put t/1 one
get k/a
del k/c

put t/1 failed

"""
TXN_FAILURE = """val("k/a") = "nope"
ver("t/none") > "0"

put t/2 unused

put t/2 two
get t/ --prefix
del t/1 --prev-kv
get k/ --prefix --keys-only --limit 1

"""
TXN_TOO_MANY_OPS = "\n\n" + "".join(f"put t/many{i} v\n" for i in range(129)) + "\n\n"
TXN_MAX_OPS = "\n\n" + "".join(f"put t/max{i} v\n" for i in range(128)) + "\n\n"
TXN_DUPLICATE_KEYS = """

put t/dup one
put t/dup two


"""


def test_put(reference, target):
    assert_same_as_reference(reference, target, "put", [
        Cmd("put k/a A1"),
        Cmd("put k/a A2 --prev-kv"),
        Cmd("put k/a A3 --prev-kv -w json"),
        Cmd("put k/a --ignore-value --prev-kv"),
        Cmd("put k/a --ignore-value -w json"),
        Cmd("put k/b B1"),
        Cmd("put k/c C1"),
        Cmd("put k/d D0"),
        Cmd("put k/d D1"),
        Cmd("put z Z1 -w json"),
        Cmd("lease grant 600", grant="lease"),
        Cmd("put k/leased L1 --lease {lease}"),
        Cmd("put k/leased --ignore-value --prev-kv -w json"),
        Cmd("get k/leased -w json"),
        Cmd("put k/leased L2 --ignore-lease --prev-kv -w json"),
        Cmd("put k/leased L3 --lease {lease}"),
        Cmd("put k/leased L4 --ignore-lease -w json"),
        Cmd("get k/leased -w json"),
        Cmd("put k/b 'a value with spaces'"),
        Cmd("put k/stdin", stdin="value from stdin"),
        Cmd("put k/unicode", stdin="h\u00e9llo \u2603"),
        Cmd("get k/unicode -w json"),
    ])


def test_get(reference, target):
    assert_same_as_reference(reference, target, "get", [
        Cmd("get k/a"),
        Cmd("get k/a -w json"),
        Cmd("get k/missing"),
        Cmd("get k/missing -w json"),
        Cmd("get k/ --prefix"),
        Cmd("get k/ --prefix -w json"),
        Cmd("get k/b --from-key --keys-only"),
        Cmd("get k/b k/d"),
        Cmd("get k/d k/b"),
        Cmd("get k/b k/b"),
        Cmd("get '' --prefix --keys-only"),
        Cmd("get k/ --prefix --from-key --keys-only --limit 3"),
        Cmd("get k/ --prefix --limit 2 -w json"),
        Cmd("get '' --from-key --limit 3 -w json"),
        Cmd("get k/ --prefix --print-value-only"),
        Cmd("get k/ --prefix --sort-by=VALUE --order=DESCEND"),
        Cmd("get k/ --prefix --sort-by=CREATE --order=ASCEND -w json"),
        Cmd("get k/ --prefix --sort-by=MODIFY --order=DESCEND --keys-only"),
        Cmd("get k/ --prefix --sort-by=VERSION --order=DESCEND --keys-only"),
        Cmd("get k/ --prefix --sort-by=KEY --order=DESCEND --limit 2"),
        Cmd("get k/ --prefix --order=DESCEND --keys-only"),
        Cmd("get k/ --prefix --sort-by=VALUE --order=ASCEND --limit 2 -w json"),
        Cmd("get k/ --prefix --sort-by=MODIFY --order=DESCEND --limit 2 --keys-only"),
        Cmd("get k/ --prefix --sort-by=KEY --order=ASCEND --limit 2 --rev 8 -w json"),
        Cmd("get k/a --rev 2"),
        Cmd("get k/a --rev 3 -w json"),
        Cmd("get k/ --prefix --rev 6 -w json"),
        Cmd("get k/ --prefix --consistency=s --keys-only"),
        Cmd("get k/ --prefix --consistency=l -w json --limit 1"),
        Cmd("get k/a --hex"),
    ])


def test_del(reference, target):
    assert_same_as_reference(reference, target, "del", [
        Cmd("put d/1 one"),
        Cmd("put d/2 two"),
        Cmd("put d/3 three"),
        Cmd("put d/4 four"),
        Cmd("del d/1"),
        Cmd("del d/1"),
        Cmd("del d/2 --prev-kv"),
        Cmd("del d/ --prefix --prev-kv -w json"),
        Cmd("del d/ --prefix"),
        Cmd("put d/5 five"),
        Cmd("del d/5 d/9 -w json"),
        Cmd("del d/9 d/1"),
        Cmd("del y --from-key --prev-kv -w json"),
        Cmd("get d/ --prefix --rev 20 -w json"),
    ])


def test_txn(reference, target):
    assert_same_as_reference(reference, target, "txn", [
        Cmd("txn -i", stdin=TXN_SUCCESS),
        Cmd("txn -i -w json", stdin=TXN_FAILURE),
        Cmd("txn", stdin=TXN_SUCCESS),
        Cmd("txn -w json", stdin=TXN_SUCCESS),
        Cmd("get t/ --prefix -w json"),
    ])


def test_errors(reference, target):
    """Errors that reach the server: code and message text (in etcdctl's log line) must match."""
    assert_same_as_reference(reference, target, "errors", [
        Cmd("put '' value"),
        Cmd("get ''"),
        Cmd("put e/1 v --lease 1234abcd"),
        Cmd("put e/missing --ignore-value"),
        # Over the default --max-request-bytes (1.5 MiB), under etcdctl's own 2 MiB send limit.
        Cmd("put e/big", stdin="x" * (1024 * 1024 + 600 * 1024)),
        Cmd("put e/missing v --ignore-lease"),
        Cmd("txn", stdin=TXN_DUPLICATE_KEYS),
        Cmd("txn", stdin=TXN_TOO_MANY_OPS),
        Cmd("txn -w json", stdin=TXN_MAX_OPS),
        Cmd("get k/a --rev 100000"),
        Cmd("compaction 5"),
        Cmd("get k/a --rev 4"),
        Cmd("get k/a --rev 5 -w json"),
        Cmd("compaction 5"),
        Cmd("compaction 3"),
        Cmd("get k/ --prefix --keys-only"),
    ])
