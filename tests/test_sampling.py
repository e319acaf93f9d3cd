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


def test_groups_are_sorted_by_length_and_the_longest_comes_first():
    lengths = list(range(100))
    s = EpochLengthGroupedSampler(lengths, group_size=5, seed=0, mega_batch_mult=2)
    order = list(s)
    assert lengths[order[0]] == 99
    for i in range(0, 100, 10):
        chunk = [lengths[j] for j in order[i:i + 10]]
        assert chunk == sorted(chunk, reverse=True)
