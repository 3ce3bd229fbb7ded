"""etcd v3 auth on the member: users, roles, permissions, tokens (contract: docs/auth.md).

- state.py     `AuthState`: one immutable version of the auth store and etcd's permission checks
- passwords.py the password KDF (scrypt), run off the event loop
- tokens.py    `--auth-token`: simple tokens and JWT
- store.py     `AuthStore`: applies the replicated auth requests, persists them with the batch
- gate.py      identity of a request (token / client certificate CN) and the checks services call
- service.py   etcdserverpb.Auth
"""
