"""The artifact contract: what one stage hands the next, and the one place each part of it is defined.

    recipe.py        a recipe (configs/*.toml): sections, validation, where each stage's artifacts live
    manifest.py      every stage directory's manifest.json: its schema, fingerprints, outputs, up-to-date checks
    raw.py           raw/: the documents `make data` writes and the tokenizer and shards stages read
    shard_format.py  shards/: token shards, their index and manifest; the writer, the reader, the verifier
    stage_lock.py    one run per stage directory at a time

It sits below both the stages that write artifacts (pipelines/) and the code that reads them (train/,
the service), and imports only the tokenizer (to open shards together with the tokenizer they name).
"""
