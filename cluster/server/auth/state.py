"""`AuthState`: one version of the auth store, and etcd 3.4's permission checks over it.

An AuthState is never changed once published: the AuthStore (store.py) builds a new one for each
applied auth change and swaps the reference, so readers on the event loop and the apply thread
always see one consistent version without a lock.

Permission semantics (etcd 3.4 auth/store.go isOpPermitted, auth/range_perm_cache.go):
- auth disabled: everything is permitted;
- revision 0 (no user given) -> "user name is empty"; a revision older than the store's ->
  "revision of auth store is old"; an unknown user -> "permission denied";
- a user holding the role `root` may do anything;
- otherwise the user's permissions are the union of its roles' permissions; READ needs a READ or
  READWRITE permission, WRITE a WRITE or READWRITE one. A single key is permitted when one
  permission contains it; a range [key, range_end) when the union of the permissions covers it
  all. A permission's range_end "\\0" (and a request's) means "to the end of the keyspace"; an
  empty permission range_end is the single key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protos.authpb import auth_pb2

from .. import errors

ROOT_USER = "root"
ROOT_ROLE = "root"
READ, WRITE, READWRITE = auth_pb2.Permission.READ, auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE

Interval = tuple[bytes, "bytes | None"]  # [begin, end); end None = no upper bound


def perm_interval(key: bytes, range_end: bytes) -> Interval:
    """The key interval of a permission or request (etcd's affine intervals)."""
    if not range_end:
        return key, key + b"\0"
    if range_end == b"\0":
        return key, None
    return key, range_end


def covers(intervals: list[Interval], want: Interval) -> bool:
    """Whether the union of `intervals` (sorted by begin) covers `want` entirely."""
    cur, end = want
    if end is not None and end <= cur:
        return True  # an empty interval (etcd answers nothing for it, so nothing to protect)
    for begin, stop in intervals:
        if begin > cur:
            return False
        if stop is None:
            return True
        if stop > cur:
            cur = stop
            if end is not None and cur >= end:
                return True
    return False


@dataclass(frozen=True)
class AuthInfo:
    """Who makes a request: etcd's AuthInfo. revision 0 means "no user given"."""

    username: str = ""
    revision: int = 0


@dataclass
class _MergedPerms:
    read: list[Interval]
    write: list[Interval]


@dataclass
class AuthState:
    """One immutable version of the auth store (do not mutate a published instance)."""

    enabled: bool = False
    revision: int = 1  # etcd starts its auth store at revision 1
    users: dict[str, auth_pb2.User] = field(default_factory=dict)
    roles: dict[str, auth_pb2.Role] = field(default_factory=dict)
    _merged: dict[str, _MergedPerms] = field(default_factory=dict, repr=False, compare=False)

    # -- lookups ----------------------------------------------------------------------------------
    def has_root_role(self, username: str) -> bool:
        user = self.users.get(username)
        return user is not None and ROOT_ROLE in user.roles

    def has_role(self, username: str, role: str) -> bool:
        user = self.users.get(username)
        return user is not None and role in user.roles

    def _perms(self, username: str) -> _MergedPerms:
        merged = self._merged.get(username)
        if merged is None:
            read: list[Interval] = []
            write: list[Interval] = []
            for role_name in self.users[username].roles:
                role = self.roles.get(role_name)
                if role is None:
                    continue
                for perm in role.keyPermission:
                    ivl = perm_interval(perm.key, perm.range_end)
                    if perm.permType in (READ, READWRITE):
                        read.append(ivl)
                    if perm.permType in (WRITE, READWRITE):
                        write.append(ivl)
            merged = _MergedPerms(sorted(read), sorted(write))
            self._merged[username] = merged
        return merged

    # -- checks (raise errors.EtcdError) -----------------------------------------------------------
    def check_op(self, info: AuthInfo, key: bytes, range_end: bytes, write: bool) -> None:
        """etcd's isOpPermitted: may `info` read (write=False) or write [key, range_end)?"""
        if not self.enabled:
            return
        if info.revision == 0:
            raise errors.USER_EMPTY
        if info.revision < self.revision:
            raise errors.AUTH_OLD_REVISION
        if info.username not in self.users:
            raise errors.PERMISSION_DENIED
        if self.has_root_role(info.username):
            return
        perms = self._perms(info.username)
        if not covers(perms.write if write else perms.read, perm_interval(key, range_end)):
            raise errors.PERMISSION_DENIED

    def check_admin(self, info: AuthInfo | None) -> None:
        """etcd's IsAdminPermitted: the user must hold the root role (when auth is on)."""
        if not self.enabled:
            return
        if info is None or not info.username:
            raise errors.USER_EMPTY
        if info.username not in self.users:
            raise errors.USER_NOT_FOUND
        if not self.has_root_role(info.username):
            raise errors.PERMISSION_DENIED
