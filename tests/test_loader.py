"""The training data loader: window arithmetic, sampling without replacement, DDP disjointness, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.loader import ContextTooLongError, ShuffledLoader, TokenWindows, eval_window_ids


class FakeShards:
    """Just enough of ShardReader: token_arrays(split) -> list of 1-D arrays."""

    def __init__(self, splits: dict[str, list[np.ndarray]]):
        self.splits = splits

    def token_arrays(self, split):
        return self.splits[split]


def ramp_shards(sizes, dtype=np.uint16):
    """Shards whose concatenation is 0, 1, 2, ...: every window's content reveals where it came from."""
    out, start = [], 0
    for n in sizes:
        out.append(np.arange(start, start + n, dtype=dtype))
        start += n
    return out


def test_windows_overlap_by_one_and_cross_shard_boundaries():
    arrays = ramp_shards([7, 3, 11])  # 21 tokens, boundaries at 7 and 10
    w = TokenWindows(arrays, seq_len=4)
    assert w.num_windows == (21 - 1) // 4 == 5
    for i in range(w.num_windows):
        assert w.window(i).tolist() == list(range(4 * i, 4 * i + 5))
    x, y = w.batch([1, 2])  # window 1 = 4..8 spans shards 0/1, window 2 = 8..12 spans 1/2
    assert x.dtype == torch.int64 and x.shape == (2, 4)
    assert x.tolist() == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert y.tolist() == [[5, 6, 7, 8], [9, 10, 11, 12]]


def test_window_spanning_several_shards():
    w = TokenWindows(ramp_shards([2, 1, 1, 5]), seq_len=6)
    assert w.window(0).tolist() == list(range(7))


def test_every_target_once_per_epoch_without_replacement():
    arrays = ramp_shards([50, 50, 29])  # 129 tokens -> 16 windows of 8+1
    loader = ShuffledLoader(FakeShards({"train": arrays}), "train", batch_size=4, seq_len=8, seed=3)
    n = loader.windows.num_windows
    assert n == 16
    targets = []
    for _ in range(n // 4):
        _, y = loader.next_batch()
        targets += y.flatten().tolist()
    assert sorted(targets) == list(range(1, 129))  # each target token exactly once in epoch 0
    epoch0 = loader.stream_ids(0, n)
    epoch1 = loader.stream_ids(n, n)
    assert sorted(epoch0) == sorted(epoch1) == list(range(n))
    assert epoch0 != epoch1  # a fresh order each epoch
    other_seed = ShuffledLoader(FakeShards({"train": arrays}), "train", batch_size=4, seq_len=8, seed=4)
    assert other_seed.stream_ids(0, n) != epoch0


def test_ranks_get_disjoint_windows_and_cover_the_single_process_stream():
    arrays = ramp_shards([1000])
    src = FakeShards({"train": arrays})
    single = ShuffledLoader(src, "train", batch_size=6, seq_len=10, seed=0)
    ranks = [ShuffledLoader(src, "train", batch_size=3, seq_len=10, seed=0, rank=r, world_size=2) for r in range(2)]
    for _ in range(5):  # one micro-batch of 6 in 1 process == micro-batches of 3 in each of 2 processes
        x1, _ = single.next_batch()
        xa, _ = ranks[0].next_batch()
        xb, _ = ranks[1].next_batch()
        assert not set(map(tuple, xa.tolist())) & set(map(tuple, xb.tolist()))
        assert torch.equal(x1, torch.cat([xa, xb]))
    assert single.consumed == ranks[0].consumed == ranks[1].consumed == 30


def test_batches_straddle_epochs_without_losing_windows():
    loader = ShuffledLoader(FakeShards({"train": ramp_shards([41])}), "train", batch_size=3, seq_len=4, seed=1)
    n = loader.windows.num_windows  # 10: batches of 3 do not divide it
    seen = []
    for _ in range(10):  # 30 windows = 3 whole epochs
        x, _ = loader.next_batch()
        seen += [row[0] // 4 for row in x.tolist()]
    for e in range(3):
        assert sorted(seen[e * n:(e + 1) * n]) == list(range(n))
    assert loader.epoch == 3


def test_state_dict_resumes_the_exact_stream():
    src = FakeShards({"train": ramp_shards([300, 211])})
    a = ShuffledLoader(src, "train", batch_size=5, seq_len=16, seed=9)
    for _ in range(7):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch()[0] for _ in range(6)]
    b = ShuffledLoader(src, "train", batch_size=5, seq_len=16, seed=9)
    b.load_state_dict(state)
    assert all(torch.equal(e, b.next_batch()[0]) for e in expected)


def test_resume_on_other_data_is_refused():
    a = ShuffledLoader(FakeShards({"train": ramp_shards([300])}), "train", batch_size=2, seq_len=16, seed=9)
    b = ShuffledLoader(FakeShards({"train": ramp_shards([600])}), "train", batch_size=2, seq_len=16, seed=9)
    with pytest.raises(ValueError, match="num_windows: checkpoint 18 vs now 37"):
        b.load_state_dict(a.state_dict())
    c = ShuffledLoader(FakeShards({"train": ramp_shards([300])}), "train", batch_size=2, seq_len=16, seed=10)
    with pytest.raises(ValueError, match="seed"):
        c.load_state_dict(a.state_dict())


def test_split_shorter_than_a_window_is_a_clear_error():
    src = FakeShards({"val": ramp_shards([10, 6])})
    message = "context longer than a shard split can supply.*'val' split has only 16"
    with pytest.raises(ContextTooLongError, match=message):
        ShuffledLoader(src, "val", batch_size=1, seq_len=16, seed=0)
    assert TokenWindows(ramp_shards([10, 7]), seq_len=16).num_windows == 1  # 17 tokens: exactly one window


def test_eval_windows_are_fixed_capped_and_dealt_to_ranks():
    assert eval_window_ids(100, val_tokens=40, seq_len=8, rank=0, world_size=1) == [0, 1, 2, 3, 4]
    assert eval_window_ids(3, val_tokens=10_000, seq_len=8, rank=0, world_size=1) == [0, 1, 2]
    parts = [eval_window_ids(100, 80, 8, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10))
