"""gq_search / nearest_search against the plain broadcast reference (docs/method.md section 4).

The fast path scores with one float32 GEMM, the reference with a float64 (N, K, d) broadcast, so their
scores differ by rounding. "Exact agreement" is therefore checked strictly but without flakiness:
- the chosen codeword's reference score is within 2 x (a rigorous bound on the GEMM rounding error) of the
  reference maximum, for every row;
- wherever the reference's best beats its second best by more than that, the indices are equal;
- most rows are such clear rows (the test is not vacuous);
- inputs built from small integers and powers of two are exact in both, so ties are compared exactly.
"""

import pytest
import torch

from gaussquant.quantizers.search import (
    _blocked_argmax,
    _query_log_ratio,
    _features_log_ratio,
    _search_gemm,
    SearchPlan,
    gq_search,
    nearest_search,
    plan_search,
    reference_scores,
    reference_search,
)

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64: d = 1 takes the scalar bisection path, computed in float64


def _rounding_bound(mean, std, codebook, rule, beta, unit=None):
    """Per-row bound on |GEMM score - exact score|, in the reference's units (which are 2x the GEMM's)."""
    mu, c = mean.double(), codebook.double()
    if rule == "nearest":
        a = torch.full_like(mu, 0.5)
        b = mu.abs()
        cols = mu.shape[1] + 1
    else:
        inv = std.double().square().reciprocal()
        a, b = ((beta - inv) * 0.5).abs(), (mu * inv).abs()
        cols = 2 * mu.shape[1]
    mag = a @ c.square().t() + b @ c.abs().t()  # (N, K): sum of |terms| of each dot product
    unit = unit or (U64 if mu.shape[1] == 1 else U32)
    return 2.0 * (cols + 8) * unit * mag.amax(dim=1)


def assert_matches_reference(idx, mean, std, codebook, rule="log_ratio", beta=1.0, min_clear=0.9, unit=None):
    ref = reference_scores(mean, std, codebook, rule=rule, beta=beta)
    n, k = ref.shape
    assert idx.dtype == torch.long and idx.shape == (n,)
    assert ((idx >= 0) & (idx < k)).all()
    if n == 0:
        return
    tol = _rounding_bound(mean, std, codebook, rule, beta, unit)
    best = ref.max(dim=1).values
    chosen = ref.gather(1, idx[:, None]).squeeze(1)
    assert (best - chosen <= 2 * tol).all(), "a chosen codeword is worse than the best beyond rounding"
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * tol
    assert torch.equal(idx[clear], ref.argmax(dim=1)[clear])
    assert clear.float().mean() >= min_clear, f"only {clear.float().mean():.2f} of rows are clear"


def _inputs(n, k, d, seed, log_std=(-1.0, 1.0)):
    g = torch.Generator().manual_seed(seed)
    codebook = torch.randn(k, d, generator=g)
    mean = torch.randn(n, d, generator=g) * 1.5
    lo, hi = log_std
    std = torch.exp(lo + (hi - lo) * torch.rand(n, d, generator=g))
    return mean, std, codebook


@pytest.mark.parametrize("d", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("k", [2, 3, 37, 1000])
def test_log_ratio_matches_reference(d, k):
    mean, std, codebook = _inputs(97, k, d, seed=d * 1000 + k)
    for beta in (1.0, 0.0, 0.37, 3.0):
        # a tiny budget forces many row and codeword blocks, and per-block codeword transforms
        idx = gq_search(mean, std, codebook, beta=beta, max_memory_bytes=120_000)
        assert_matches_reference(idx, mean, std, codebook, "log_ratio", beta)
        assert torch.equal(idx, gq_search(mean, std, codebook, beta=beta))  # default blocks agree


@pytest.mark.parametrize("d", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("log_std", [(-15.0, -12.0), (5.0, 10.0), (-15.0, 10.0)], ids=["tiny", "huge", "mixed"])
def test_extreme_sigmas(d, log_std):
    mean, std, codebook = _inputs(64, 513, d, seed=7 + d, log_std=log_std)
    for beta in (1.0, 0.0):
        idx = gq_search(mean, std, codebook, beta=beta, max_memory_bytes=50_000)
        assert_matches_reference(idx, mean, std, codebook, "log_ratio", beta, min_clear=0.75)


@pytest.mark.parametrize("d", [1, 2, 4, 8, 16])
def test_nearest_matches_reference(d):
    mean, std, codebook = _inputs(150, 777, d, seed=3 * d)
    idx = nearest_search(mean, codebook, max_memory_bytes=150_000)
    assert_matches_reference(idx, mean, None, codebook, "nearest")
    assert torch.equal(idx, gq_search(mean, std, codebook, rule="nearest"))


@pytest.mark.parametrize("d", [1, 2, 4])
@pytest.mark.parametrize("rule", ["log_ratio", "nearest"])
def test_exact_ties_go_to_lowest_index(d, rule):
    # Small integers and std in {0.5, 1}: every score is exact in float32 and float64, so ties are real.
    g = torch.Generator().manual_seed(11)
    base = torch.randint(-2, 3, (5, d), generator=g).float()
    codebook = torch.cat([base, base.flip(0), base])  # every codeword appears 2-3 times
    mean = torch.randint(-3, 4, (40, d), generator=g).float()
    std = torch.where(torch.rand(40, d, generator=g) < 0.5, 0.5, 1.0)
    for beta in (0.0, 1.0):
        ref = reference_search(mean, std, codebook, rule=rule, beta=beta)
        for budget in (None, 1_000):  # 1 kB: duplicates fall into different blocks
            idx = gq_search(mean, std, codebook, rule=rule, beta=beta, max_memory_bytes=budget)
            assert torch.equal(idx, ref)
        assert int(idx.max()) < 5 + 5  # the third copy (indices 10..14) never wins


def test_gemm_path_also_serves_d1():
    # the bisection replaces the GEMM for d = 1; both agree with the reference
    mean, std, codebook = _inputs(200, 100, 1, seed=9)
    for beta in (1.0, 0.0):
        idx = _search_gemm(mean, std, codebook, beta, 200_000)
        assert_matches_reference(idx, mean, std, codebook, "log_ratio", beta, unit=U32)


def test_scalar_path_convex_and_flat_cases():
    codebook = torch.tensor([[0.5], [-2.0], [3.0], [3.0], [-2.0], [0.0]])
    # sigma = 1, beta = 1: a = 0, the score is b * c = mu * c (linear): max codeword for mu > 0, min for mu < 0;
    # mu = 0: all scores 0, index 0. sigma = 2: a > 0 (convex), the farther extreme wins.
    mean = torch.tensor([[1.0], [-1.0], [0.0], [0.1], [-0.3]])
    std = torch.tensor([[1.0], [1.0], [1.0], [2.0], [2.0]])
    idx = gq_search(mean, std, codebook)
    assert idx.tolist() == [2, 1, 0, 2, 2]
    assert torch.equal(idx, reference_search(mean, std, codebook))


@pytest.mark.parametrize(
    "rows, codes, sub",
    [(128, 512, 64), (7, 128, 64), (300, 1000, 64), (300, 1000, 1), (33, 1000, 1000), (1, 24, 8), (300, 999, 37)],
    ids=["default-shape", "ragged-rows", "one-block-partial-sub", "sub-1", "sub-K", "tiny", "odd"],
)
def test_two_pass_argmax_equals_plain_argmax_for_any_blocking(rows, codes, sub):
    # float64 scores: the blocked two-pass argmax must equal a plain argmax of the same scores, whatever the
    # row, codeword and sub-block sizes (K = 1000 is not a multiple of any of them, so runs are partial).
    mean, std, codebook = _inputs(300, 1000, 8, seed=5)
    query = _query_log_ratio(mean.double(), std.double(), 1.0, torch.float64)
    codes64 = codebook.double()
    plain = (query @ _features_log_ratio(codes64).t()).argmax(dim=1)
    for prebuild in (True, False):
        plan = SearchPlan(rows, codes, sub, query_cols=16, itemsize=8, working_bytes=0, prebuild=prebuild)
        assert torch.equal(_blocked_argmax(query, codes64, plan, _features_log_ratio), plain)


def test_plan_keeps_sub_blocks_inside_codeword_blocks():
    cases = [(512, 65536, None), (65536, 65536, 2**20), (97, 1000, 120_000), (5, 15, 1_000), (9, 513, 50_000)]
    for n, k, budget in cases:
        plan = plan_search(n, k, 32, 4, budget)
        assert plan.code_block == k or plan.code_block % plan.sub_block == 0
        assert 1 <= plan.sub_block <= plan.code_block <= k and 1 <= plan.row_block <= n
        assert plan.working_bytes <= (budget or 64 * 2**20)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(dtype):
    mean, std, codebook = _inputs(50, 300, 4, seed=2)
    mean, std = mean.to(dtype), std.to(dtype)
    idx = gq_search(mean, std, codebook.to(dtype))
    assert torch.equal(idx, gq_search(mean.float(), std.float(), codebook.to(dtype).float()))


def test_empty_and_single_row():
    _, _, codebook = _inputs(1, 10, 4, seed=0)
    assert gq_search(torch.empty(0, 4), torch.empty(0, 4), codebook).shape == (0,)
    assert gq_search(torch.empty(0, 1), torch.empty(0, 1), codebook[:, :1]).shape == (0,)
    one = gq_search(codebook[3:4] + 1e-3, torch.full((1, 4), 1e-2), codebook)
    assert one.tolist() == [3]


def test_memory_plan_is_bounded():
    plan = plan_search(65536, 65536, 32)
    assert plan.working_bytes <= 256 * 2**20
    small = plan_search(65536, 65536, 32, 4, 2**20)
    assert small.working_bytes <= 2**20 and not small.prebuild
    with pytest.raises(ValueError, match="too small"):
        plan_search(10, 10, 32, 4, 100)


def test_bad_arguments_say_what_is_wrong():
    mean, std, codebook = _inputs(4, 8, 4, seed=1)
    with pytest.raises(ValueError, match="std must be"):
        gq_search(mean, std[:, :2], codebook)
    with pytest.raises(ValueError, match="codeword dimension"):
        gq_search(mean, std, codebook[:, :2])
    with pytest.raises(ValueError, match="K >= 2"):
        gq_search(mean, std, codebook[:1])
    with pytest.raises(ValueError, match="beta"):
        gq_search(mean, std, codebook, beta=-0.5)
    with pytest.raises(ValueError, match="rule"):
        gq_search(mean, std, codebook, rule="cosine")
    with pytest.raises(ValueError, match="mean contains NaN"):
        gq_search(torch.full_like(mean, float("nan")), std, codebook)
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        gq_search(mean, std.clone().index_fill_(0, torch.tensor([1]), float("nan")), codebook)
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        gq_search(mean, -std, codebook)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        gq_search(mean[0], std[0], codebook)
    with pytest.raises(ValueError, match="codebook contains NaN"):
        nearest_search(mean, torch.full_like(codebook, float("nan")))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_reference():
    torch.backends.cuda.matmul.allow_tf32 = False
    for d in (1, 4, 16):
        mean, std, codebook = _inputs(500, 4097, d, seed=d)
        idx = gq_search(mean.cuda(), std.cuda(), codebook.cuda(), max_memory_bytes=2**20).cpu()
        assert_matches_reference(idx, mean, std, codebook)
        idx = nearest_search(mean.cuda().half(), codebook.cuda()).cpu()
        assert torch.equal(idx, nearest_search(mean.half().float(), codebook))


def test_prepared_codebook_cache_never_serves_a_modified_codebook():
    mean, std, codebook = _inputs(50, 40, 1, seed=4)
    first = gq_search(mean, std, codebook)
    codebook.mul_(-1.0)  # in place: the version counter changes, the cache must miss
    assert torch.equal(gq_search(mean, std, codebook), reference_search(mean, std, codebook))
    assert not torch.equal(first, gq_search(mean, std, codebook))
    codebook[3, 0] = float("nan")
    with pytest.raises(ValueError, match="codebook contains NaN"):
        gq_search(mean, std, codebook)


def test_cached_features_follow_the_codebook_and_are_dropped_with_it():
    from gaussquant.quantizers import search

    mean, std, codebook = _inputs(60, 300, 4, seed=12)
    first = gq_search(mean, std, codebook)
    keys = [key for key in search._PREPARED if key[0] == id(codebook)]
    assert any("features" in key[1] for key in keys)
    codebook.mul_(-1.0)  # in place: the cached features must be rebuilt
    assert torch.equal(gq_search(mean, std, codebook), reference_search(mean, std, codebook))
    assert not torch.equal(first, gq_search(mean, std, codebook))
    del codebook
    assert not any(key in search._PREPARED for key in keys)


def test_queries_that_require_grad_are_searched_without_a_graph():
    mean, std, codebook = _inputs(20, 100, 4, seed=13)
    idx = gq_search(mean.requires_grad_(), std, codebook.requires_grad_())
    assert torch.equal(idx, gq_search(mean.detach(), std, codebook.detach()))
