"""etcd's command-line conventions for `kvcluster`'s argparse parser (cluster/cli.py).

etcd parses its flags with Go's `flag` package and then reads every flag it was not given from
an `ETCD_<FLAG>` environment variable (pkg/flags.SetFlagsFromEnv): `--initial-cluster-state` from
`ETCD_INITIAL_CLUSTER_STATE`. Operators rely on both: Debian's /etc/default/etcd, container
images and `etcdctl member add` (which prints ETCD_NAME, ETCD_INITIAL_CLUSTER,
ETCD_INITIAL_ADVERTISE_PEER_URLS and ETCD_INITIAL_CLUSTER_STATE for the new member) configure a
member through its environment, and older docs write flags with one dash (`-name infra0`).

`prepare_argv(parser, argv, environ)` turns such a command line and environment into plain
argparse input, as etcd 3.4.23 does (checked against it):
- `-flag` and `-flag=value` mean `--flag` and `--flag=value` when `--flag` is one of ours;
- a flag not on the command line takes its environment variable's value, when that is not empty;
  the value is checked like the flag's ("invalid value "abc" for ETCD_SNAPSHOT_COUNT: ...");
- a variable whose flag is also on the command line is refused (etcd exits: "conflicting
  environment variable ... is shadowed by corresponding command-line flag");
- other `ETCD_*` variables are reported as unrecognized (a warning) and otherwise ignored.
It returns the argv to parse and the log lines to emit once logging is configured; it raises
`EnvFlagError` (exit status 1, as etcd) for a bad or conflicting variable.

Also here, for both `kvcluster` and `kvproxy start`: Go's duration syntax (`parse_duration`), the
etcd flags without a counterpart here (accepted without effect, or refused: MEMBER_*, PROXY_*),
and the client-connection flags (`add_client_connection_flags`) with the grpc core server
options they become (`client_connection_options`).
"""

from __future__ import annotations

import argparse
import logging
import re
from typing import Mapping, Sequence

PREFIX = "ETCD_"
GO_TRUE = ("1", "t", "true")
GO_FALSE = ("0", "f", "false")


class EnvFlagError(ValueError):
    """An ETCD_* variable the member must not start with."""


_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)"


def parse_duration(value: str) -> float:
    """A non-negative Go duration ("10m", "1h30m", "500ms", "1.5s", "0") in seconds."""
    if value == "0":
        return 0.0
    if not value or not re.fullmatch(f"(?:{_DURATION_PART})+", value):
        raise ValueError(f"invalid duration {value!r}")
    return sum(float(n) * _UNITS[u] for n, u in re.findall(_DURATION_PART, value))


def go_bool(value: str) -> bool:
    """Go's flag syntax for booleans: 1, t, true, 0, f, false (any case)."""
    if value.lower() in GO_TRUE:
        return True
    if value.lower() in GO_FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r}")


def uint32(value: str) -> int:
    n = int(value)
    if not 0 <= n < 2 ** 32:
        raise argparse.ArgumentTypeError(f"out of range for uint32: {n}")
    return n


def env_key(option: str) -> str:
    """`--initial-cluster-state` -> `ETCD_INITIAL_CLUSTER_STATE` (etcd's flags.FlagToEnv)."""
    return PREFIX + option.lstrip("-").upper().replace("-", "_")


def _long_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: action for action in parser._actions for opt in action.option_strings
            if opt.startswith("--") and opt != "--help"}


def _go_dashes(token: str, options: Mapping[str, argparse.Action]) -> str:
    if token.startswith("-") and not token.startswith("--") and len(token) > 2:
        name = "-" + token.split("=", 1)[0]
        if name in options:
            return "-" + token
    return token


def _check_value(action: argparse.Action, key: str, value: str) -> None:
    """etcd's words: "parse error" for a value of the wrong type, "invalid value" for one
    outside the flag's choices."""
    try:
        converted = action.type(value) if action.type is not None else value
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise EnvFlagError(f'invalid value "{value}" for {key}: parse error') from None
    if action.choices is not None and converted not in action.choices:
        raise EnvFlagError(f'invalid value "{value}" for {key}: invalid value')


def prepare_argv(parser: argparse.ArgumentParser, argv: Sequence[str],
                 environ: Mapping[str, str]) -> tuple[list[str], list[tuple[int, str]]]:
    """See the module docstring. Returns (argv for `parser.parse_args`, [(log level, message)])."""
    options = _long_options(parser)
    argv = [_go_dashes(t, options) for t in argv]
    given = {t.split("=", 1)[0] for t in argv if t.startswith("--")}
    by_key = {env_key(opt): (opt, action) for opt, action in options.items()}
    messages: list[tuple[int, str]] = []
    extra: list[str] = []
    for key in sorted(k for k in environ if k.startswith(PREFIX)):
        value = environ[key]
        if key not in by_key:
            messages.append((logging.WARNING, f"unrecognized environment variable {key}={value}"))
            continue
        opt, action = by_key[key]
        if opt in given:
            raise EnvFlagError(f'conflicting environment variable "{key}" is shadowed by corresponding '
                               "command-line flag (either unset environment variable or disable flag)")
        if value == "":
            messages.append((logging.WARNING, f"unrecognized environment variable {key}={value}"))
            continue
        if isinstance(action, argparse._StoreTrueAction):  # a flag without a value: Go bool syntax
            try:
                if go_bool(value):
                    extra.append(opt)
            except argparse.ArgumentTypeError:
                raise EnvFlagError(f'invalid value "{value}" for {key}: parse error') from None
        else:
            _check_value(action, key, value)
            extra.append(f"{opt}={value}")
        messages.append((logging.INFO, f"recognized and used environment variable {key}={value}"))
    return argv + extra, messages


# etcd 3.4 flags for what we have no counterpart of, for `kvcluster` (MEMBER_*) and for
# `kvproxy start` (PROXY_*, `etcd grpc-proxy start`'s). Both kinds are accepted on the command line
# (and a member's from ETCD_* variables), so that a process configured for etcd starts, and both
# say so when given (one log line each, or a refusal).
#
# Accepted, with nothing to do here (value: why). Their values are still checked where etcd
# checks them (`--metrics`, `--bcrypt-cost`).
MEMBER_NO_EFFECT = {
    "--enable-pprof": "Go's runtime profiler: there is no Go runtime here",
    "--metrics": "grpc_server_handling_seconds, what 'extensive' adds, is always exposed",
    "--experimental-backend-bbolt-freelist-type": "a bbolt setting: the store is LMDB",
    "--backend-batch-interval": "bbolt commit batching: the store commits once per applied batch",
    "--backend-batch-limit": "bbolt commit batching: the store commits once per applied batch",
    "--experimental-compaction-batch-limit": "compaction deletes in chunks of its own size",
    "--log-package-levels": "capnslog's per-package levels: use --log-level",
    "--cors": "for etcd's HTTP/JSON gateway and v2 API, which are not served",
    "--host-whitelist": "for etcd's HTTP/JSON gateway and v2 API, which are not served",
    "--experimental-peer-skip-client-san-verification":
        "peer client certificates are checked against --peer-trusted-ca-file only",
    "--bcrypt-cost": "passwords are hashed with scrypt (cluster/server/auth/passwords.py)",
    "--discovery-fallback": "used only with --discovery",
    "--proxy-failure-wait": "used only with --proxy",
    "--proxy-refresh-interval": "used only with --proxy",
    "--proxy-dial-timeout": "used only with --proxy",
    "--proxy-write-timeout": "used only with --proxy",
    "--proxy-read-timeout": "used only with --proxy",
}
PROXY_NO_EFFECT = {
    "--enable-pprof": "Go's runtime profiler: there is no Go runtime here",
    "--advertise-client-url": "used only with --resolver-prefix",
    "--resolver-ttl": "used only with --resolver-prefix",
    "--insecure-discovery": "used only with --discovery-srv",
}
BOOLEAN = {"--enable-pprof", "--experimental-peer-skip-client-san-verification", "--enable-v2",
           "--force-new-cluster", "--experimental-initial-corrupt-check",
           "--experimental-enable-lease-checkpoint", "--peer-auto-tls", "--insecure-discovery",
           "--insecure-skip-tls-verify", "--experimental-serializable-ordering"}
# Refused unless left at what etcd does by default (value: (is that value harmless, why)).
_EMPTY = (lambda v: v == "")
_OFF = (lambda v: not go_bool(v))  # checked to parse first (_given)
_NO_DISCOVERY = "discovery bootstrap is not supported: list the members in --initial-cluster"
_NO_CORRUPT_CHECK = ("corruption checks between members are not implemented "
                     "(compare `etcdctl endpoint hashkv --cluster`)")
MEMBER_UNSUPPORTED = {
    "--enable-v2": (_OFF, "the v2 API is not served"),
    "--experimental-enable-v2v3": (_EMPTY, "the v2 API is not served"),
    "--proxy": (lambda v: v == "off", "etcd's v2 proxy mode is not provided (kvproxy is the v3 proxy)"),
    "--discovery": (_EMPTY, _NO_DISCOVERY),
    "--discovery-srv": (_EMPTY, _NO_DISCOVERY),
    "--discovery-srv-name": (_EMPTY, _NO_DISCOVERY),
    "--discovery-proxy": (_EMPTY, _NO_DISCOVERY),
    "--force-new-cluster": (_OFF, "rebuild a cluster from a snapshot with `kvcluster snapshot restore`"),
    "--client-crl-file": (_EMPTY, "certificate revocation lists are not supported"),
    "--peer-crl-file": (_EMPTY, "certificate revocation lists are not supported"),
    "--cipher-suites": (_EMPTY, "TLS cipher suites cannot be chosen per server in grpcio"),
    "--client-cert-allowed-hostname": (_EMPTY, "client certificates are checked against --trusted-ca-file only"),
    "--peer-cert-allowed-cn": (_EMPTY, "peer certificates are checked against --peer-trusted-ca-file only"),
    "--peer-cert-allowed-hostname": (_EMPTY, "peer certificates are checked against --peer-trusted-ca-file only"),
    "--experimental-initial-corrupt-check": (_OFF, _NO_CORRUPT_CHECK),
    "--experimental-corrupt-check-time": (lambda v: v in ("0", "0s"), _NO_CORRUPT_CHECK),
    "--experimental-enable-lease-checkpoint": (_OFF, "remaining lease TTLs are not checkpointed: a new "
                                               "leader restarts leases at their full TTL, as etcd without it"),
    "--peer-auto-tls": (_OFF, "give --peer-cert-file and --peer-key-file"),
}
PROXY_UNSUPPORTED = {
    "--resolver-prefix": (_EMPTY, "registering the proxy's endpoint in the cluster is not supported"),
    "--discovery-srv": (_EMPTY, "DNS discovery is not supported: give --endpoints"),
    "--discovery-srv-name": (_EMPTY, "DNS discovery is not supported: give --endpoints"),
    "--insecure-skip-tls-verify": (_OFF, "the cluster's certificates are always verified: give --cacert"),
    "--experimental-serializable-ordering": (_OFF, "not supported"),
    "--experimental-leasing-prefix": (_EMPTY, "the leasing KV is not supported (the proxy's cache is kept "
                                             "coherent by a watch instead)"),
    "--client-crl-file": (_EMPTY, "certificate revocation lists are not supported"),
    "--listen-cipher-suites": (_EMPTY, "TLS cipher suites cannot be chosen per server in grpcio"),
}
_CHOICES = {"--metrics": ("basic", "extensive"), "--discovery-fallback": ("proxy", "exit"),
            "--experimental-backend-bbolt-freelist-type": ("array", "map")}


def _dest(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def add_etcd_only_flags(parser: argparse.ArgumentParser, no_effect: Mapping[str, str],
                        unsupported: Mapping[str, tuple]) -> None:
    """Register the flags of `no_effect` and `unsupported` (the tables above) on `parser`: raw
    strings, None when not given."""
    for option in (*no_effect, *unsupported):
        if option in BOOLEAN:
            parser.add_argument(option, nargs="?", const="true", default=None, help=argparse.SUPPRESS)
        else:
            parser.add_argument(option, default=None, help=argparse.SUPPRESS)


def check_etcd_only(args: argparse.Namespace, no_effect: Mapping[str, str],
                    unsupported: Mapping[str, tuple], program: str) -> list[tuple[int, str]]:
    """Log lines for the etcd-only flags given; ValueError for one `program` cannot honour."""
    messages = []
    for option, reason in no_effect.items():
        value = _given(args, option)
        if value is None:
            continue
        if option in _CHOICES and value not in _CHOICES[option]:
            raise ValueError(f"invalid value {value!r} for {option}: one of {', '.join(_CHOICES[option])}")
        if option == "--bcrypt-cost" and not (value.isdigit() and 4 <= int(value) <= 31):
            raise ValueError(f"invalid value {value!r} for --bcrypt-cost: between 4 and 31")
        if option in BOOLEAN and not go_bool(value):
            continue
        messages.append((logging.WARNING, f"{option}={value} has no effect in {program}: {reason}"))
    for option, (harmless, reason) in unsupported.items():
        value = _given(args, option)
        if value is None:
            continue
        if option == "--peer-auto-tls" and args.peer_cert_file and args.peer_key_file:
            continue  # as etcd: ignored when the peer certificate is given
        if not harmless(value):
            raise ValueError(f"{option}={value} is not supported by {program}: {reason}")
    return messages


def _given(args: argparse.Namespace, option: str) -> str | None:
    """The raw value of an etcd-only flag, None if not given; a boolean's must parse."""
    value = getattr(args, _dest(option))
    if value is not None and option in BOOLEAN:
        try:
            go_bool(value)
        except argparse.ArgumentTypeError:
            raise ValueError(f"invalid value {value!r} for {option}: parse error") from None
    return value


GRPC_INT_MAX = 2 ** 31 - 1  # grpc core's integer channel arguments are C ints


def add_client_connection_flags(parser: argparse.ArgumentParser) -> None:
    """etcd's --max-concurrent-streams and --grpc-keepalive-{min-time,interval,timeout}, with
    etcd's defaults (a member's; etcd 3.5's grpc-proxy has the same); see
    client_connection_options for what they become."""
    a = parser.add_argument
    a("--max-concurrent-streams", type=uint32, default=2 ** 32 - 1,
      help="maximum concurrent streams each client connection may open")
    a("--grpc-keepalive-min-time", type=parse_duration, default="5s",
      help="minimum interval a client should wait between pings")
    a("--grpc-keepalive-interval", type=parse_duration, default="2h",
      help="frequency of pings to idle clients (0 to disable)")
    a("--grpc-keepalive-timeout", type=parse_duration, default="20s",
      help="wait for a ping's answer before closing the connection (0 to disable)")


def client_connection_options(max_concurrent_streams: int, keepalive_min_time: float,
                              keepalive_interval: float, keepalive_timeout: float) -> list[tuple[str, int]]:
    """grpc core server options for etcd's --max-concurrent-streams and
    --grpc-keepalive-{min-time,interval,timeout} (seconds; interval and timeout 0: disabled):
    a client pinging more often than `keepalive_min_time` gets GOAWAY too_many_pings, idle
    connections are pinged every `keepalive_interval` and closed when a ping goes unanswered
    for `keepalive_timeout`."""
    def ms(seconds: float) -> int:
        return min(int(seconds * 1000), GRPC_INT_MAX) if seconds > 0 else GRPC_INT_MAX
    return [
        ("grpc.max_concurrent_streams", min(max_concurrent_streams, GRPC_INT_MAX)),
        ("grpc.keepalive_time_ms", ms(keepalive_interval)),
        ("grpc.keepalive_timeout_ms", ms(keepalive_timeout)),
        # (not "min_recv_ping_interval...": grpc core ignores unknown keys, and its default is 5 min)
        ("grpc.http2.min_ping_interval_without_data_ms", int(keepalive_min_time * 1000)),
    ]
