"""Resume: a state_dict taken mid-epoch continues exactly the same stream (same layout), and
at shard granularity when the layout changed."""

from __future__ import annotations


import numpy as np
import pytest

from _stream_helpers import collect, make_shards, read_tar_samples
from ipmix_cli.common.errors import IpmixError
from ipmix_cli.stream import ShardLoader
from ipmix_cli.stream.plan import Layout, interleave, plan_epoch, rank_blocks, roles_of, round_robin

pytestmark = pytest.mark.kernels  # runs Numba kernels (left out of `make test-fast`)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    make_shards(root, shard_counts=(9, 9, 9, 9, 9), epochs=2, views=3, size=6)
    return root


def _interrupted(root, stop_after, **kw):
    first = ShardLoader(root, **kw)
    first.set_epoch(3)
    before = []
    for i, (x, y) in enumerate(first):
        before.append((x.numpy(), y.numpy()))
        if i + 1 == stop_after:
            break
    state = first.state_dict()
    second = ShardLoader(root, **kw)
    second.load_state_dict(state)
    second.set_epoch(3)  # what a training loop does on restart: keeps the resume position
    assert second.remaining == len(second) - stop_after
    after = [(x.numpy(), y.numpy()) for x, y in second]
    return before, after, state


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("workers,stop_after", [(0, 1), (0, 4), (2, 3), (3, 4)])
def test_resume_continues_the_same_stream(shards, workers, stop_after):
    kw = dict(batch_size=2, rank=1, world_size=2, num_workers=workers, shuffle_buffer=4, seed=5)
    whole = ShardLoader(shards, **kw)
    whole.set_epoch(3)
    full = [(x.numpy(), y.numpy()) for x, y in whole]
    before, after, state = _interrupted(shards, stop_after, **kw)
    assert state["epoch"] == 3 and state["position"] == stop_after
    assert len(before) + len(after) == len(full) == len(whole)
    for (xa, ya), (xb, yb) in zip(before + after, full):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_state_after_a_finished_epoch_moves_on(shards):
    loader = ShardLoader(shards, 4)
    loader.set_epoch(1)
    collect(loader)
    state = loader.state_dict()
    assert state["position"] == len(loader)
    again = ShardLoader(shards, 4)
    again.load_state_dict(state)
    assert collect(again)[0].shape[0] == 0
    again.set_epoch(2)
    assert again.remaining == len(again)
    reference = ShardLoader(shards, 4)
    reference.set_epoch(2)
    np.testing.assert_array_equal(collect(again)[0], collect(reference)[0])


def test_round_robin_matches_the_dataloader_order():
    # roles with unequal batch counts: exhausted workers are skipped
    lengths = [3, 1, 2]
    order = list(interleave(lengths, 0, [0, 0, 0]))
    assert order == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]
    for pos in range(len(order) + 1):
        consumed, nxt = round_robin(lengths, pos)
        rest = list(interleave(lengths, nxt, consumed))
        assert order[:pos] + rest == order


def test_plan_blocks_cover_the_rank_range_once():
    layout = Layout(world_size=3, num_workers=2, batch_size=2, block=4, drop_last=False, seed=1)
    plan = plan_epoch([5, 3, 7], layout, t=4, num_materialized=2)
    assert plan.materialized == 0 and plan.total == 15 and plan.per_rank == 5 and plan.batches == 3
    covered = []
    for rank in range(3):
        blocks = rank_blocks(plan, rank)
        assert sum(b.size for b in blocks) == plan.used
        roles = roles_of(blocks, 2, 2)
        assert sum(len(r) for r in roles) == plan.batches
        for b in blocks:
            covered += [(s, i) for s, a, z in b.segments for i in range(a, z)]
    # 15 samples over 3 ranks of 5: every sample exactly once
    assert sorted(covered) == sorted((s, i) for s, n in enumerate([5, 3, 7]) for i in range(n))


def _sample_ids(root, images):
    table = {}
    for path in sorted((root / "epoch-0001").glob("*.tar")):
        for key, (views, _) in read_tar_samples(path).items():
            table[views[0].tobytes()] = key
    return [table[img[0].transpose(1, 2, 0).tobytes()] for img in images]


def test_resume_with_another_world_size_is_shard_granular(shards):
    old = dict(batch_size=2, world_size=2, num_workers=0, shuffle_buffer=2, seed=5, drop_last=False)
    delivered = []
    states = []
    for rank in range(2):
        loader = ShardLoader(shards, rank=rank, **old)
        loader.set_epoch(3)
        for i, (x, _) in enumerate(loader):
            delivered += _sample_ids(shards, x.numpy())
            if i + 1 == 6:
                break
        states.append(loader.state_dict())
    new = ShardLoader(shards, 3, world_size=1, drop_last=False, seed=5)
    with pytest.warns(RuntimeWarning, match="shard granularity"):
        new.load_state_dict(states[0])
    new.set_epoch(3)
    batches = new.remaining
    after = _sample_ids(shards, collect(new)[0])
    assert 3 * (batches - 1) < len(after) <= 3 * batches
    per_shard = {}
    for path in sorted((shards / "epoch-0001").glob("*.tar")):
        per_shard[path.name] = set(read_tar_samples(path))
    done = [name for name, keys in per_shard.items() if keys <= set(delivered)]
    assert done, "6 batches of 2 on 2 ranks should finish at least one 9-sample shard"
    rest = set().union(*(keys for name, keys in per_shard.items() if name not in done))
    # every sample of an unfinished shard comes after the restart, none of a finished one
    assert set(after) == rest
    # len() keeps describing a full epoch; only `remaining` shrank
    assert len(new) == 15 and batches < 15


def test_state_from_other_shards_refused(shards, tmp_path):
    other = tmp_path / "other"
    make_shards(other, shard_counts=(9, 9), epochs=1, views=3, size=6, config_hash="different")
    state = ShardLoader(other, 2).state_dict()
    with pytest.raises(IpmixError, match="different shard set"):
        ShardLoader(shards, 2).load_state_dict(state)


def test_persistent_workers_follow_epochs_and_resume(shards):
    kw = dict(batch_size=2, world_size=2, rank=0, num_workers=2, shuffle_buffer=4, seed=5)
    fresh = {}
    for t in (0, 1, 2):
        loader = ShardLoader(shards, **kw)
        loader.set_epoch(t)
        fresh[t] = collect(loader)[0]
    reused = ShardLoader(shards, **kw)
    for t in (0, 1, 2):
        reused.set_epoch(t)
        np.testing.assert_array_equal(collect(reused)[0], fresh[t])
    # break off epoch 1 half-way, then resume it on the same loader (same workers)
    reused.set_epoch(1)
    before = []
    for i, (x, _) in enumerate(reused):
        before.append(x.numpy())
        if i == 2:
            break
    state = reused.state_dict()
    reused.set_epoch(2)
    collect(reused)
    reused.load_state_dict(state)
    after = collect(reused)[0]
    np.testing.assert_array_equal(np.concatenate(before + [after]), fresh[1])
    reused.close()


def test_close_stops_the_workers(shards):
    import multiprocessing

    others = {p.pid for p in multiprocessing.active_children()}
    loader = ShardLoader(shards, 4, num_workers=2)
    collect(loader)
    assert len({p.pid for p in multiprocessing.active_children()} - others) == 2  # persistent
    loader.close()
    assert not {p.pid for p in multiprocessing.active_children()} - others
    assert collect(loader)[0].shape[0] == len(loader) * 4  # and they start again on demand
    loader.close()
