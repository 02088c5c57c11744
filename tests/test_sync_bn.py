"""--sync-bn over 2 gloo processes on the CPU: the synchronized BatchNorm keeps the moving-statistics rule of the
layer it replaces. The study's Keras BatchNorm moves its variance with the biased variance of the batch, PyTorch's
with the unbiased one; both over the global batch, split unevenly over the ranks. A hand computation in float64
is the reference."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from cnnlab import distributed
from cnnlab.models.alexnet import KERAS_BN, KerasBatchNorm2d

SHARES = (3, 2)  # images of each global batch on rank 0 and rank 1: uneven, so a per-rank count would show
STEPS = 3


def global_batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(sum(SHARES), 3, 2, 2, generator=generator) * 2 + 1 for _ in range(STEPS)]


def mixed_model() -> nn.Module:
    """A Keras BatchNorm, then a PyTorch one with the same momentum and eps."""
    return nn.Sequential(KerasBatchNorm2d(3, **KERAS_BN), nn.Flatten(), nn.BatchNorm1d(12, **KERAS_BN))


def _rank_main(rank: int, store: str, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=2)
    try:
        net = distributed.wrap(mixed_model(), torch.device("cpu"), sync_bn=True)
        start = sum(SHARES[:rank])
        for batch in global_batches():
            net(batch[start : start + SHARES[rank]]).square().sum().backward()
        state = {k: v for k, v in net.state_dict().items()}
        torch.save({k.removeprefix("module."): v for k, v in state.items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def moving_statistics() -> dict[str, torch.Tensor]:
    """By hand over the global batches: moving = momentum * moving + (1 - momentum) * batch statistic (Keras's
    momentum, 0.99); the first layer's variance biased (sum of squares / n, Keras), the second's unbiased
    (/ (n - 1), PyTorch)."""
    keep = 1.0 - KERAS_BN["momentum"]
    moving = {
        "0": [torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)],
        "2": [torch.zeros(12, dtype=torch.float64), torch.ones(12, dtype=torch.float64)],
    }
    for batch in global_batches():
        x = batch.double()
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
        moving["0"] = [keep * moving["0"][0] + (1 - keep) * mean, keep * moving["0"][1] + (1 - keep) * var]
        y = ((x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + KERAS_BN["eps"])).flatten(1)
        mean, var = y.mean(0), y.var(0, unbiased=True)
        moving["2"] = [keep * moving["2"][0] + (1 - keep) * mean, keep * moving["2"][1] + (1 - keep) * var]
    return {
        f"{layer}.{name}": value
        for layer, (m, v) in moving.items()
        for name, value in (("running_mean", m), ("running_var", v))
    }


def test_sync_bn_keeps_each_layers_moving_variance_rule_over_the_global_batch(tmp_path):
    store = f"file://{tmp_path / 'store'}"
    mp.spawn(_rank_main, args=(store, str(tmp_path)), nprocs=2, join=True)
    expected = moving_statistics()
    for rank in range(2):
        state = torch.load(tmp_path / f"rank{rank}.pt")
        for key, value in expected.items():
            # float32 sums against float64: 1e-6 apart; the other layer's rule is off by momentum * var / (n - 1),
            # at least 5e-4 here
            torch.testing.assert_close(
                state[key].double(),
                value,
                rtol=0,
                atol=2e-6,
                msg=lambda text, rank=rank, key=key: f"rank {rank}, {key}: {text}",
            )
        assert int(state["0.num_batches_tracked"]) == STEPS


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_sync_batchnorm_keeps_each_layer_its_class_and_state(device):
    """Every layer, on a GPU too, stays an instance of its own class, so its rule, with the global batch's
    statistics: not torch's SyncBatchNorm, which waits for the GPU in every layer's forward (a boolean-mask
    index). (The conversion needs no process group; the 2-process test above runs the CPU's.)"""
    model = mixed_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    distributed.sync_batchnorm(model, torch.device(device))
    assert isinstance(model[0], KerasBatchNorm2d) and isinstance(model[0], distributed.GlobalBatchStatistics)
    assert isinstance(model[2], nn.BatchNorm1d) and isinstance(model[2], distributed.GlobalBatchStatistics)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())


def test_synchronised_layer_in_one_process_is_the_layer_itself():
    """Without a process group a converted Keras layer computes as before: Keras's rule on this batch."""
    plain, synced = mixed_model(), distributed.sync_batchnorm(mixed_model(), torch.device("cpu"))
    for batch in global_batches():
        torch.testing.assert_close(synced(batch), plain(batch), rtol=0, atol=0)
    torch.testing.assert_close(synced.state_dict(), plain.state_dict(), rtol=0, atol=0)
