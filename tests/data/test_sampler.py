"""The training sampler: deterministic, sharded across processes, and tone-balanced when weighted."""

from collections import Counter

from dermdiff_lora.data.balance import group_weights
from dermdiff_lora.data.sampler import StepBatchSampler


def test_processes_get_disjoint_slices_of_the_one_process_stream():
    one = [b for b in StepBatchSampler(10, 4, seed=3, start=0, stop=5)]
    two = [list(StepBatchSampler(10, 2, seed=3, start=0, stop=5, num_processes=2, process_index=p))
           for p in (0, 1)]
    for step in range(5):
        assert two[0][step] + two[1][step] == one[step]
    assert list(StepBatchSampler(10, 4, seed=3, start=2, stop=5)) == one[2:]  # resume = same stream


def test_epochs_are_permutations():
    batches = list(StepBatchSampler(12, 4, seed=0, start=0, stop=3))
    assert sorted(i for b in batches for i, _ in b) == list(range(12))


def test_weighted_sampling_balances_the_group_mix():
    groups = ["lighter"] * 700 + ["brown"] * 250 + ["darker"] * 50
    weights = group_weights(groups)
    sampler = StepBatchSampler(len(groups), 10, seed=0, start=0, stop=300, weights=weights)
    seen = Counter(groups[i] for batch in sampler for i, _ in batch)
    total = sum(seen.values())
    for g in ("lighter", "brown", "darker"):
        assert abs(seen[g] / total - 1 / 3) < 0.03, seen
