"""The one-home helpers every layer imports: distributed readiness, dataclass -> plain dict, discrete check."""

from __future__ import annotations

import dataclasses

import pytest
import torch.distributed as dist

from gaussquant.distributed import distributed_ready, rank_and_world
from gaussquant.plain import to_plain
from gaussquant.quantizers.base import require_discrete
from gaussquant.quantizers.build import FSQConfig, GaussianConfig, build_bottleneck


def test_distributed_ready_follows_the_process_group(tmp_path):
    assert not distributed_ready() and rank_and_world() == (0, 1)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert distributed_ready() and rank_and_world() == (0, 1)
    finally:
        dist.destroy_process_group()
    assert not distributed_ready()


@dataclasses.dataclass
class _Inner:
    sizes: tuple[int, ...] = (1, 2)


@dataclasses.dataclass
class _Outer:
    name: str = "x"
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    extra: dict = dataclasses.field(default_factory=lambda: {"k": (3, _Inner((4,)))})


def test_to_plain_nests_and_turns_tuples_into_lists():
    assert to_plain(_Outer()) == {"name": "x", "inner": {"sizes": [1, 2]}, "extra": {"k": [3, {"sizes": [4]}]}}
    assert to_plain(_Outer) is _Outer  # a class is left alone, only instances are converted
    assert to_plain(3.5) == 3.5


def test_require_discrete():
    require_discrete(build_bottleneck(FSQConfig(levels=[3, 3])), "tokenize")
    gaussian = build_bottleneck(GaussianConfig(latent_channels=4, codebook_dim=4, target_bits=4.0))
    with pytest.raises(TypeError, match="encode needs a discrete bottleneck.*GaussianBottleneck.*convert"):
        require_discrete(gaussian, "encode")
    with pytest.raises(TypeError, match="NoneType"):
        require_discrete(None, "decode")
