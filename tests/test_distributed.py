"""DDP under torchrun (gloo, CPU) against a single process with the same global batch.

What is compared, and why it can be exact: both runs see the same global batches (one seeded
permutation; each rank takes its contiguous half of every batch, and per-item augmentation is
seeded by the item, not by the process), and DDP averages the two ranks' gradients, which equals
the gradient of the mean loss over the global batch. BatchNorm is the exception: without
SyncBatchNorm (CUDA only, and not what the paper's ``nn.DataParallel`` training did) each rank
normalises with the statistics of its own half. So the single-process reference splits each
batch into the same two halves for the forward pass (``GhostBatch``): then the trained weights
must agree to float rounding. BatchNorm *running* statistics are not compared: DDP keeps rank 0's
(broadcast each step), the reference updates them once per half. The method is SN (no CrossNorm),
because CrossNorm's random pairing draws differ between one process and two. The reference runs
with one intra-op thread, as each rank does: at this test's 32 px the last stage's maps are 1 x 1,
where instance statistics are ill-conditioned and amplify the rounding differences that another
thread count's reduction order brings (1.5% of the gradient of ``conv1``) far beyond 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_IMAGENET, tiny_imagenet_folder

from sncn.experiments import imagenet_c
from sncn.train.distributed import GhostBatch, rank_batches


def _only_run(results_dir):
    """The one run folder under ``results_dir`` (names carry a digest of the setting)."""
    (run,) = (Path(results_dir) / "runs").iterdir()
    return run


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["trainer"]["model"]
    return {
        k.removeprefix("module."): v
        for k, v in state.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


def test_rank_batches_partition_the_global_batches():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    single = list(rank_batches(21, 6, g()))
    ranks = [list(rank_batches(21, 6, g(), r, 3)) for r in range(3)]
    assert len(single) == 3 and all(len(b) == 6 for b in single)  # partial batch dropped
    for step, batch in enumerate(single):
        torch.testing.assert_close(torch.cat([ranks[r][step] for r in range(3)]), batch)
    with pytest.raises(ValueError, match="divisible"):
        list(rank_batches(21, 6, g(), 0, 4))


def test_ghost_batch_normalises_each_slice():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    x = torch.randn(8, 3, 4, 4)
    out = GhostBatch(bn, 2).train()(x)
    ref = torch.cat(
        [torch.nn.functional.batch_norm(p, None, None, training=True) for p in x.chunk(2)]
    )
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(GhostBatch(bn, 2).eval()(x), bn.eval()(x))


def test_torchrun_two_processes_match_one_process(tmp_path):
    data = tiny_imagenet_folder(tmp_path / "data")
    sets = [f"--set={k}={str(v).replace(' ', '').lower()}" for k, v in TINY_IMAGENET.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sncn.experiments.imagenet_c",
        "--method",
        "sn",
        "--data",
        str(data),
        "--results",
        str(tmp_path / "ddp"),
        "--evaluation",
        "none",
        "--device",
        "cpu",
        *sets,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp_run = _only_run(tmp_path / "ddp")
    params = imagenet_c.results.load_metrics(ddp_run)  # metrics.json written by rank 0
    assert params["history"][0]["epoch"] == 1

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank (OMP_NUM_THREADS=1): the same reduction order
    try:
        single = imagenet_c.run(
            "sn",
            tmp_path / "single",
            data,
            overrides=TINY_IMAGENET,
            evaluation="none",
            device="cpu",
            ghost_batches=2,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    single_run = _only_run(tmp_path / "single")
    ddp_w, single_w = weights(ddp_run), weights(single_run)
    assert ddp_w.keys() == single_w.keys() and any("selfnorm" in k for k in ddp_w)
    torch.manual_seed(0)  # as run() does before building the model
    initial = imagenet_c.build_model("sn", 2, {**imagenet_c.SETTING, **TINY_IMAGENET})
    moved = 0
    for key, value in single_w.items():
        torch.testing.assert_close(
            ddp_w[key], value, rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}"
        )
        moved += not torch.allclose(value, initial.state_dict()[key])
    assert moved > len(single_w) // 2  # training changed the weights: the match means something
    # BatchNorm over the whole global batch (no ghost batches) is a different computation
    imagenet_c.run(
        "sn",
        tmp_path / "whole",
        data,
        overrides=TINY_IMAGENET,
        evaluation="none",
        device="cpu",
        progress=False,
    )
    whole_w = weights(_only_run(tmp_path / "whole"))
    assert not all(torch.allclose(whole_w[k], v, rtol=1e-5, atol=1e-6) for k, v in ddp_w.items())
    assert 0 <= single["clean_error"] <= 100 and 0 <= params["clean_error"] <= 100


def test_ddp_leaves_the_style_layers_switches_to_each_rank(tmp_path):
    # DDP broadcasts buffers in place before each forward; the switches must not be among them
    # (a compiled backward still to run holds the switch its forward saw)
    import torch.distributed as dist

    from sncn.layers import CNSN, SWITCH_SLOTS
    from sncn.train.distributed import DistInfo, wrap_ddp

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), CNSN(4), torch.nn.Conv2d(4, 4, 3))
        ddp = wrap_ddp(model, DistInfo(backend="gloo"))
        ignored = set(ddp.parameters_to_ignore)
        switches = {f"1.crossnorm.{name}" for name, _ in model[1].crossnorm.named_buffers()}
        assert ignored == switches and len(switches) == SWITCH_SLOTS
        assert not any(name.startswith("0.") for name in ignored)
        dist.barrier()
    finally:
        dist.destroy_process_group()
