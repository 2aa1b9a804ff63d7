"""What a user of `datasets` sees in Arrow shards, exactly as the README states it: one row per document
*piece*. Shards hold a fixed number of tokens, so a document that crosses a shard boundary is one row in
each shard it touches, all with the same id: the first starts with <|endoftext|>, the others (each the
first row of its shard) do not. Rows that start with <|endoftext|> are the documents;
ShardReader.iter_documents stitches the pieces back."""

from __future__ import annotations

import pytest
from stage_helpers import copy_project, original_project, recipe_in, stage_dir

from contract.recipe import load_recipe
from contract.shard_format import ShardReader
from pipelines import shards


@pytest.fixture(scope="module")
def arrow_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("arrow")
    copy_project(original_project(tmp_path_factory), root)
    shards.run(load_recipe(recipe_in(root, format="arrow")), progress_bar=False, log=lambda *a: None)
    return stage_dir(root, "shards")


def test_rows_are_document_pieces_as_documented(arrow_dir):
    import datasets

    reader = ShardReader(arrow_dir)
    eot = reader.eot_id
    files = [arrow_dir / e["path"] for e in reader.shards("train")]
    tables = [datasets.Dataset.from_file(str(f)) for f in files]
    assert tables[0].column_names[:2] == ["input_ids", "id"]
    starts, continued = 0, 0
    for before, after in zip(tables, tables[1:]):
        first = after[0]
        if first["input_ids"][0] != eot:   # the document before the boundary goes on here
            assert first["id"] == before[-1]["id"]
            continued += 1
    for table in tables:
        starts += sum(1 for ids in table["input_ids"] if ids[0] == eot)
        assert all(ids[0] == eot for ids in table["input_ids"][1:])   # only a shard's first row may continue
    assert continued > 5   # documents really are cut
    assert starts == reader.num_documents("train") == sum(1 for _ in reader.iter_documents("train"))
    assert sum(len(t) for t in tables) == starts + continued   # rows = documents + continuations


def test_the_reader_stitches_pieces_back(arrow_dir):
    reader = ShardReader(arrow_dir)
    docs = dict(reader.iter_documents("train"))
    entry_a, entry_b = reader.shards("train")[:2]
    ids_a, _ = reader.shard_pieces(entry_a)
    tail = reader.shard_tokens(entry_a)[reader.shard_pieces(entry_a)[1][-1]:]
    head_ids, head_starts = reader.shard_pieces(entry_b)
    head = reader.shard_tokens(entry_b)[: head_starts[1]]
    assert head_ids[0] == ids_a[-1] and head[0] != reader.eot_id
    assert docs[ids_a[-1]].tolist()[: len(tail) + len(head)] == tail.tolist() + head.tolist()
