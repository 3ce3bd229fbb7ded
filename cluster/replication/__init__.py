"""Replication for kvcluster: the Raft driver behind the server's `ReplicatedLog` seam.

- ``RaftDriver`` (driver.py): the asyncio loop joining the Raft core, the WAL, the peer transport
  and the apply callback; implements ``cluster.server.seam.ReplicatedLog``.
- ``ReadIndexBatcher`` (read_index.py): linearizable read barriers, one ReadIndex round per batch.
- ``PeerTransport`` / ``PeerStream`` (transport.py): per-peer gRPC streams of Raft messages.
- ``RaftPeerService`` (peer_service.py): the receiving side, served on --listen-peer-urls.
- ``build_replicated_log`` (factory.py): what the member calls to get its log from its flags.

See docs/cluster.md.
"""
