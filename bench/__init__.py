"""Benchmarks: `kvbench` (cli, suites, h2load and grpc drivers, compare, report) and micro-benchmarks.

kvbench's modules, one job each:
  cli          argument parsing, `kvbench <suite>` and `kvbench compare`
  suites       each suite: LoadOptions -> BenchResult
  h2load       unary loads through h2load, gRPC status accounting
  grpc_load    multi-process grpc.aio loads (parent side); workers: the worker processes
  histogram    latency histogram and percentiles;  result: one result as text/JSON
  compare      etcd 3.4.23 vs our stack;  stack: starting both;  procs: process plumbing
  report       the Markdown table and its section in docs/benchmarks.md;  plots: PNGs
  metrics      members' Prometheus counters;  requests: the etcd requests sent
  null_server  the Python ceiling (a do-nothing grpc.aio server)
"""
