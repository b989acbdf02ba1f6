"""VQ (VQGAN): loss placement, search, EMA updates and dead-code restarts."""

from __future__ import annotations

import pytest
import torch

from gaussquant.quantizers.vq import VectorQuantizer, code_statistics


def _set_codebook(q: VectorQuantizer, cb: torch.Tensor) -> None:
    with torch.no_grad():
        q.codebook.copy_(cb)
        if q.ema:
            q.ema_sum.copy_(cb)


def test_indices_match_brute_force_argmin():
    g = torch.Generator().manual_seed(0)
    q = VectorQuantizer(6, 50, 3, grouping="contiguous")  # strided: test_reference_settings
    _set_codebook(q, torch.randn(50, 3, generator=g))
    h = torch.randn(4, 7, 6, generator=g)
    idx = q.quantize(h)  # (B, L, G)
    z = h.reshape(4, 7, 2, 3)
    ref = torch.cdist(z.reshape(-1, 3), q.codebook.detach()).argmin(-1).reshape(4, 7, 2)
    assert torch.equal(idx, ref)


@pytest.mark.parametrize("legacy", [False, True])
def test_beta_placement(legacy):
    q = VectorQuantizer(2, 2, beta=0.25, legacy=legacy)
    _set_codebook(q, torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    h = torch.tensor([[[1.0, 2.0]]])  # nearest code 0, squared error mean = (1 + 4) / 2 = 2.5
    out = q(h)
    assert out.losses["codebook"].item() == pytest.approx(2.5 * (0.25 if legacy else 1.0))
    assert out.losses["commitment"].item() == pytest.approx(2.5 * (1.0 if legacy else 0.25))


def test_codebook_gets_gradient_only_from_codebook_term():
    q = VectorQuantizer(2, 4)
    _set_codebook(q, torch.randn(4, 2, generator=torch.Generator().manual_seed(1)))
    h = torch.randn(3, 5, 2, requires_grad=True)
    out = q(h)
    out.z_hat.sum().backward(retain_graph=True)
    assert q.codebook.grad is None or q.codebook.grad.abs().sum() == 0  # straight-through: decoder path skips it
    out.losses["codebook"].backward()
    assert q.codebook.grad.abs().sum() > 0


def test_l2_normalize_gives_unit_codes():
    q = VectorQuantizer(8, 16, 4, l2_normalize=True).eval()
    z_hat = q(torch.randn(2, 8, 3, 3)).z_hat
    norms = z_hat.permute(0, 2, 3, 1).reshape(-1, 4, 2).norm(dim=-2)  # strided groups: channel = j * G + g
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


def test_ema_update_matches_formula():
    decay, eps = 0.5, 1e-5
    q = VectorQuantizer(2, 2, ema=True, ema_decay=decay, ema_eps=eps).train()
    cb = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
    _set_codebook(q, cb)
    h = torch.tensor([[[1.0, 1.0], [-1.0, 3.0], [6.0, 4.0]]])  # codes 0, 0, 1
    q(h)
    count = torch.tensor([0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 1])
    sums = 0.5 * cb + 0.5 * torch.tensor([[0.0, 4.0], [6.0, 4.0]])
    n = count.sum()
    smoothed = (count + eps) / (n + 2 * eps) * n
    assert torch.allclose(q.codebook, sums / smoothed[:, None], atol=1e-6)
    assert torch.allclose(q.ema_count, count)


def test_ema_converges_to_cluster_means():
    g = torch.Generator().manual_seed(2)
    centers = torch.tensor([[-3.0, 0.0], [3.0, 0.0]])
    q = VectorQuantizer(2, 2, ema=True, ema_decay=0.6).train()
    _set_codebook(q, torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
    for _ in range(25):
        pts = centers[torch.randint(2, (128,), generator=g)] + 0.1 * torch.randn(128, 2, generator=g)
        q(pts[None])
    assert torch.allclose(q.codebook, centers, atol=0.1)


def test_dead_codes_are_restarted_from_batch_latents():
    q = VectorQuantizer(2, 8, restart_threshold=0.5, ema_decay=0.5, seed=3).train()
    _set_codebook(q, torch.cat([torch.zeros(1, 2), torch.full((7, 2), 100.0)]))
    h = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(4))
    out = q(h)  # every latent hits code 0; codes 1..7 decay to usage 0.5 < threshold? not yet (0.5 == 0.5)
    assert torch.equal(out.indices, torch.zeros_like(out.indices))
    q(h)  # usage of unused codes now 0.25 < 0.5: restarted
    rows = q.codebook.detach()[1:]
    assert (torch.cdist(rows, h[0]).min(dim=1).values < 1e-6).all()  # each new code is a batch latent
    assert torch.allclose(q.usage_ema[1:], torch.ones(7))


def test_restarts_off_by_default():
    q = VectorQuantizer(2, 8).train()
    _set_codebook(q, torch.cat([torch.zeros(1, 2), torch.full((7, 2), 100.0)]))
    for _ in range(3):
        q(torch.randn(1, 16, 2))
    assert torch.equal(q.codebook.detach()[1:], torch.full((7, 2), 100.0))


def test_code_statistics():
    stats = code_statistics(torch.tensor([0, 0, 1, 1]), 4)
    assert stats["usage"].item() == pytest.approx(0.5)
    assert stats["perplexity"].item() == pytest.approx(2.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divide"):
        VectorQuantizer(6, 8, 4)
    q = VectorQuantizer(4, 8)
    with pytest.raises(ValueError, match="out of range"):
        q.dequantize(torch.tensor([[[8]]]))
    with pytest.raises(ValueError, match="latent channels"):
        q(torch.randn(1, 3, 2, 2))


def _two_rank_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        q = VectorQuantizer(2, 8, ema=True, ema_decay=0.5, restart_threshold=0.9, seed=0).train()
        g = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
        for _ in range(3):
            q(torch.randn(1, 32, 2, generator=g) + 3 * rank)
        torch.save(q.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two interpreters (a few seconds on an idle 2-core machine)
def test_ema_and_restarts_stay_in_sync_across_two_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in a:
        assert torch.equal(a[key], b[key]), key
