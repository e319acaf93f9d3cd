from jobs.sampling import EpochLengthGroupedSampler


def test_order_depends_only_on_seed_and_epoch():
    lengths = [5, 50, 7, 80, 3, 60, 9, 40] * 10
    a = EpochLengthGroupedSampler(lengths, group_size=4, seed=1, mega_batch_mult=2)
    b = EpochLengthGroupedSampler(lengths, group_size=4, seed=1, mega_batch_mult=2)
    b.set_epoch(3)
    b.set_epoch(0)  # what a resumed trainer does: only the epoch number matters
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert sorted(a) == list(range(len(lengths)))


def test_groups_are_length_homogeneous_shuffled_and_the_longest_comes_first():
    lengths = list(range(400))
    s = EpochLengthGroupedSampler(lengths, group_size=5, seed=0)
    order = list(s)
    assert sorted(order) == lengths
    assert lengths[order[0]] == 399
    groups = [[lengths[j] for j in order[i:i + 5]] for i in range(0, 400, 5)]
    assert all(g == sorted(g, reverse=True) for g in groups)
    # Within a group the spread is small (grouped by length) ...
    assert sum(g[0] - g[-1] for g in groups) / len(groups) < 60
    # ... and the groups are not walked from longest to shortest.
    firsts = [g[0] for g in groups]
    assert firsts != sorted(firsts, reverse=True)
