"""The upscalers `srfeat serve` keeps built (`srfeat.web.worker.Upscalers`): a setting whose network does not
build leaves the kept ones as they were, and one that runs out of memory beside them gets their room."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import cast

import pytest
import torch

from srfeat.errors import ModelOutOfMemoryError, WeightsError
from srfeat.inference.upscaler import Upscaler
from srfeat.web.job import ModelChoice
from srfeat.web.worker import CACHED_UPSCALERS, Upscalers

DEFAULT, GAN, HALF = ModelChoice("default"), ModelChoice("gan"), ModelChoice("default", 0.5)


def out_of_gpu_memory() -> Exception:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")


def out_of_host_memory() -> Exception:
    return RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory")


def model_out_of_memory() -> Exception:  # the Upscaler's own wording of the first two, as it loads
    return ModelOutOfMemoryError("out of memory on cuda:0 loading the model", "free it")


class BuiltNetwork:
    """Stands for an `Upscaler`: what the cache keeps, and what holds memory while anything refers to it."""

    def __init__(self, choice: ModelChoice) -> None:
        self.choice = choice


class Builder:
    """`make(choice)` for the cache: a network for each choice, each alive while referred to (`alive`); the
    choices in `damaged` fail to build, and a build with `room` networks alive already runs out of memory."""

    def __init__(
        self,
        damaged: tuple[ModelChoice, ...] = (),
        room: int = CACHED_UPSCALERS + 1,
        out_of_memory: Callable[[], Exception] = out_of_gpu_memory,
    ) -> None:
        self.damaged = damaged
        self.room = room
        self.out_of_memory = out_of_memory
        self.alive: weakref.WeakSet[BuiltNetwork] = weakref.WeakSet()
        self.built: list[ModelChoice] = []

    def __call__(self, choice: ModelChoice) -> Upscaler:
        if choice in self.damaged:
            raise WeightsError(f"{choice.label}.safetensors is damaged")
        if len(self.alive) >= self.room:
            # A new one each time, as an allocator raises it: one raised again keeps every frame it passed through.
            raise self.out_of_memory()
        network = BuiltNetwork(choice)
        self.alive.add(network)
        self.built.append(choice)
        return cast(Upscaler, network)


def test_a_network_that_does_not_build_leaves_the_kept_ones_kept() -> None:
    """It was the least recently used one that went first, then the build failed: the next job of that setting
    built it again, for nothing."""
    builder = Builder(damaged=(GAN,))
    upscalers = Upscalers(builder)
    default, half = upscalers.get(DEFAULT), upscalers.get(HALF)
    with pytest.raises(WeightsError, match="damaged"):
        upscalers.get(GAN)
    assert DEFAULT in upscalers and HALF in upscalers
    assert upscalers.get(DEFAULT) is default and upscalers.get(HALF) is half
    assert builder.built == [DEFAULT, HALF]


@pytest.mark.parametrize(
    "out_of_memory",
    [out_of_gpu_memory, out_of_host_memory, model_out_of_memory],
)
@pytest.mark.parametrize("room", [CACHED_UPSCALERS, 1])
def test_a_network_out_of_memory_beside_the_kept_ones_drops_them_least_recently_used_first(
    out_of_memory: Callable[[], Exception], room: int
) -> None:
    """With room for `room` networks, the third setting is built once as many kept ones are dropped,
    least recently used first: the one used last stays where there is room for it."""
    builder = Builder(room=room, out_of_memory=out_of_memory)
    upscalers = Upscalers(builder)
    upscalers.get(DEFAULT)
    upscalers.get(HALF)
    upscalers.get(DEFAULT)  # used last: HALF is the least recently used
    assert isinstance(upscalers.get(GAN), BuiltNetwork)
    assert GAN in upscalers and HALF not in upscalers
    assert (DEFAULT in upscalers) == (room == CACHED_UPSCALERS)


def test_a_network_out_of_memory_with_none_kept_is_the_error() -> None:
    upscalers = Upscalers(Builder(room=0))
    with pytest.raises(torch.OutOfMemoryError):
        upscalers.get(GAN)
    assert GAN not in upscalers
