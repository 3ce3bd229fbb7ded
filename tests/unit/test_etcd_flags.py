"""kvcluster's command line read the way etcd 3.4 reads its own (cluster/etcd_flags.py): ETCD_*
variables, Go's one-dash flags, etcd-only flags accepted or refused; and the flags that map onto
member settings (cluster/cli.py's config_from_args)."""

from __future__ import annotations

import logging

import pytest

from cluster import etcd_flags
from cluster.cli import build_parser, config_from_args
from cluster.etcd_flags import parse_duration


def prepare(argv, env):
    return etcd_flags.prepare_argv(build_parser(), argv, env)


def check_member(args):
    return etcd_flags.check_etcd_only(args, etcd_flags.MEMBER_NO_EFFECT, etcd_flags.MEMBER_UNSUPPORTED,
                                      "kvcluster")


def parse(argv, env=None):
    parser = build_parser()
    argv, _ = etcd_flags.prepare_argv(parser, argv, env or {})
    return parser.parse_args(argv)


def test_env_key_is_etcds():
    assert etcd_flags.env_key("--initial-cluster-state") == "ETCD_INITIAL_CLUSTER_STATE"
    assert etcd_flags.env_key("--experimental-watch-progress-notify-interval") == \
        "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL"


def test_variables_fill_the_flags_not_given():
    env = {"ETCD_NAME": "n2", "ETCD_INITIAL_CLUSTER": "n1=http://a:1,n2=http://b:2",
           "ETCD_INITIAL_CLUSTER_STATE": "existing", "ETCD_SNAPSHOT_COUNT": "500",
           "ETCD_CLIENT_CERT_AUTH": "false", "ETCD_EXPERIMENTAL_LOCAL_LOG": "true"}
    argv, messages = prepare(["--data-dir", "/d"], env)
    args = build_parser().parse_args(argv)
    assert (args.name, args.data_dir, args.initial_cluster_state, args.snapshot_count) == \
        ("n2", "/d", "existing", 500)
    assert args.initial_cluster == "n1=http://a:1,n2=http://b:2"
    assert args.client_cert_auth is False and args.experimental_local_log is True
    assert (logging.INFO, "recognized and used environment variable ETCD_NAME=n2") in messages


def test_a_flag_set_both_ways_is_refused_with_etcds_message():
    with pytest.raises(etcd_flags.EnvFlagError) as exc:
        prepare(["--snapshot-count", "6"], {"ETCD_SNAPSHOT_COUNT": "5"})
    assert str(exc.value) == ('conflicting environment variable "ETCD_SNAPSHOT_COUNT" is shadowed by '
                              
                              "corresponding command-line flag (either unset environment variable or "
                              "disable flag)")
    with pytest.raises(etcd_flags.EnvFlagError):  # even empty, as etcd
        prepare(["--name=x"], {"ETCD_NAME": ""})


def test_bad_values_name_the_variable():
    for env in ({"ETCD_SNAPSHOT_COUNT": "abc"}, {"ETCD_INITIAL_CLUSTER_STATE": "maybe"},
                {"ETCD_STRICT_RECONFIG_CHECK": "maybe"}, {"ETCD_EXPERIMENTAL_LOCAL_LOG": "yes"},
                {"ETCD_GRPC_KEEPALIVE_MIN_TIME": "5"}):
        (key, value), = env.items()
        with pytest.raises(etcd_flags.EnvFlagError) as exc:
            prepare([], env)
        assert str(exc.value) == f'invalid value "{value}" for {key}: ' + (
            "invalid value" if key == "ETCD_INITIAL_CLUSTER_STATE" else "parse error")


def test_empty_and_unknown_variables_are_reported_and_ignored():
    argv, messages = prepare([], {"ETCD_BOGUS": "1", "ETCD_CLIENT_CERT_AUTH": "", "ETCDCTL_API": "3",
                                  "HOME": "/root"})
    assert argv == []
    assert sorted(messages) == [(logging.WARNING, "unrecognized environment variable ETCD_BOGUS=1"),
                                (logging.WARNING, "unrecognized environment variable ETCD_CLIENT_CERT_AUTH=")]


def test_go_one_dash_flags():
    args = parse(["-name", "infra0", "-initial-cluster-state=existing", "--auto-compaction-retention", "-1"])
    assert (args.name, args.initial_cluster_state, args.auto_compaction_retention) == \
        ("infra0", "existing", "-1")
    with pytest.raises(SystemExit):  # no abbreviations, as Go's flag package
        parse(["--initial-cluster-sta", "new"])


def test_etcd_only_flags_are_accepted_or_refused():
    args = parse(["--enable-pprof", "--metrics", "extensive", "--enable-v2=false", "--proxy", "off",
                  "--force-new-cluster=false", "--experimental-corrupt-check-time", "0s"])
    messages = check_member(args)
    assert [m for _, m in messages] == [
        "--enable-pprof=true has no effect in kvcluster: Go's runtime profiler: there is no Go runtime here",
        "--metrics=extensive has no effect in kvcluster: grpc_server_handling_seconds, what 'extensive' "
        "adds, is always exposed"]
    for argv, error in ((["--enable-v2"], "--enable-v2=true is not supported by kvcluster: the v2 API"),
                        (["--force-new-cluster"], "--force-new-cluster=true is not supported"),
                        (["--peer-crl-file", "/x.crl"], "--peer-crl-file=/x.crl is not supported"),
                        (["--discovery", "https://discovery.etcd.io/x"], "--discovery=https"),
                        (["--peer-auto-tls"], "--peer-auto-tls=true is not supported"),
                        (["--metrics", "some"], "invalid value 'some' for --metrics"),
                        (["--bcrypt-cost", "3"], "invalid value '3' for --bcrypt-cost")):
        with pytest.raises(ValueError) as exc:
            check_member(parse(argv))
        assert str(exc.value).startswith(error), argv
    # as etcd, --peer-auto-tls is ignored when the peer certificate is given
    check_member(parse(["--peer-auto-tls", "--peer-cert-file", "c", "--peer-key-file", "k"]))
    # and they come from the environment like any flag
    with pytest.raises(ValueError):
        check_member(parse([], {"ETCD_ENABLE_V2": "true"}))


def test_go_durations():
    assert [parse_duration(v) for v in ("0", "5s", "2h", "100ms", "1h30m", "1.5s")] == \
        [0.0, 5.0, 7200.0, 0.1, 5400.0, 1.5]
    assert parse_duration("20us") == pytest.approx(2e-5)
    for bad in ("", "5", "abc", "-1s", "1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_flags_reach_the_member_config():
    cfg = config_from_args(parse([
        "--wal-dir", "/w", "--max-snapshots", "0", "--max-wals", "3", "--strict-reconfig-check=false",
        "--pre-vote=false", "--initial-election-tick-advance=false", "--grpc-keepalive-min-time", "1s",
        "--grpc-keepalive-interval", "0", "--grpc-keepalive-timeout", "3s", "--max-concurrent-streams", "7",
        "--experimental-warning-apply-duration", "1ms"]))
    assert (cfg.wal_dir, cfg.max_snapshots, cfg.max_wals) == ("/w", 0, 3)
    assert (cfg.strict_reconfig_check, cfg.pre_vote, cfg.initial_election_tick_advance) == (False, False, False)
    assert (cfg.grpc_keepalive_min_time, cfg.grpc_keepalive_interval, cfg.grpc_keepalive_timeout) == (1.0, 0.0, 3.0)
    assert (cfg.max_concurrent_streams, cfg.warning_apply_duration) == (7, 0.001)
    defaults = config_from_args(parse([]))
    assert (defaults.wal_dir, defaults.max_snapshots, defaults.max_wals, defaults.strict_reconfig_check,
            defaults.pre_vote, defaults.grpc_keepalive_min_time, defaults.grpc_keepalive_interval,
            defaults.grpc_keepalive_timeout, defaults.max_concurrent_streams,
            defaults.warning_apply_duration) == ("", 5, 5, True, True, 5.0, 7200.0, 20.0, 2 ** 32 - 1, 0.1)
    for bad in (["--max-wals", "-1"], ["--max-concurrent-streams", str(2 ** 32)]):
        with pytest.raises(SystemExit):
            parse(bad)


def test_kvproxy_takes_etcd_grpc_proxys_flags():
    from proxy.cli import build_parser as proxy_parser, config_from_args as proxy_config

    def check(argv):
        args = proxy_parser().parse_args(["start", *argv])
        return args, etcd_flags.check_etcd_only(args, etcd_flags.PROXY_NO_EFFECT,
                                                etcd_flags.PROXY_UNSUPPORTED, "kvproxy")

    args, messages = check(["--enable-pprof", "--resolver-ttl", "30", "--debug", "--max-concurrent-streams", "9",
                            "--insecure-skip-tls-verify=false", "--experimental-leasing-prefix", "",
                            "--grpc-keepalive-min-time", "1s", "--grpc-keepalive-interval", "0"])
    assert [m for _, m in messages] == [
        "--enable-pprof=true has no effect in kvproxy: Go's runtime profiler: there is no Go runtime here",
        "--resolver-ttl=30 has no effect in kvproxy: used only with --resolver-prefix"]
    config = proxy_config(args)
    assert args.debug and config.max_concurrent_streams == 9
    assert (config.grpc_keepalive_min_time, config.grpc_keepalive_interval, config.grpc_keepalive_timeout) == \
        (1.0, 0.0, 20.0)
    for argv, error in ((["--insecure-skip-tls-verify"], "--insecure-skip-tls-verify=true is not supported"),
                        (["--resolver-prefix", "/proxies"], "--resolver-prefix=/proxies is not supported"),
                        (["--discovery-srv", "example.com"], "--discovery-srv=example.com is not supported")):
        with pytest.raises(ValueError) as exc:
            check(argv)
        assert str(exc.value).startswith(error), argv


def test_connection_flags_in_grpc_cores_terms():
    assert dict(etcd_flags.client_connection_options(2 ** 32 - 1, 5.0, 7200.0, 20.0)) == {
        "grpc.max_concurrent_streams": 2 ** 31 - 1, "grpc.keepalive_time_ms": 7_200_000,
        "grpc.keepalive_timeout_ms": 20_000, "grpc.http2.min_ping_interval_without_data_ms": 5000}
    disabled = dict(etcd_flags.client_connection_options(2, 0.5, 0.0, 0.0))  # 0: never
    assert (disabled["grpc.keepalive_time_ms"], disabled["grpc.keepalive_timeout_ms"]) == (2 ** 31 - 1, 2 ** 31 - 1)
    assert (disabled["grpc.max_concurrent_streams"], disabled["grpc.http2.min_ping_interval_without_data_ms"]) == (2, 500)
