"""Harnesses for the tests and benchmarks: real artifacts and real processes, built without the pipeline.

    synthetic_shards.py   token shards written straight from arrays (no text, no tokenizer stage)
    service_process.py    the tokenisation service as a child process on a free loopback port
    ray_cluster.py        a Ray cluster of several nodes on loopback (`ray start`), stopped by PID

Not part of the installed package: nothing under tokenizer/, contract/, model/, train/, pipelines/ or
service/ imports it.
"""
