"""Shared test plumbing: free ports, managed subprocesses, and reference etcd 3.4.23 clusters.

Every test that starts a process does it through `ProcessGroup`, so that processes are killed
and reaped when the fixture ends, whatever the test did.
"""
