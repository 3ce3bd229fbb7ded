"""The member's garbage-collector policy, applied once the member serves (cluster/cli.py).

A member allocates a few hundred short-lived objects per request (gRPC calls, protobuf messages,
futures), which CPython's default thresholds (700, 10, 10) turn into thousands of collections a
second, each generation-2 pass walking every long-lived object: the imported modules, the grpc
and protobuf descriptors, the key index. Under put load that was about a tenth of the member's
CPU. So, after start:
- `gc.freeze()` moves everything that exists then (modules, servicers, the recovered state) to
  the permanent generation, which no collection walks again;
- a larger generation-0 threshold lets most request garbage die by reference counting before a
  collection sees it; cycles are still collected, only less often.
Nothing here affects correctness: it changes when cyclic garbage is reclaimed, never whether.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000
GEN1_THRESHOLD = 20
GEN2_THRESHOLD = 20


def settle_after_start() -> None:
    """Freeze what start-up built and raise the collection thresholds (module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
