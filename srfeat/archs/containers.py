"""Module containers that tell the type checker what they hold.

`nn.ModuleList` and `nn.Sequential` are typed as holding plain `nn.Module`s, so code that reaches
into a generator's blocks (`block.conv1.weight`) would need a cast at every use. These subclasses
only add type information: module names, the state dict and behaviour are those of the parents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar, overload

from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

__all__ = ["TypedModuleList", "TypedSequential"]


class TypedModuleList(nn.ModuleList, Generic[ModuleT]):
    """`nn.ModuleList` of `ModuleT`s."""

    def __init__(self, modules: Iterable[ModuleT] = ()) -> None:
        super().__init__(modules)

    if TYPE_CHECKING:

        def __iter__(self) -> Iterator[ModuleT]: ...

        # (in the parent's order of overloads)
        @overload
        def __getitem__(self, idx: slice) -> TypedModuleList[ModuleT]: ...

        @overload
        def __getitem__(self, idx: int) -> ModuleT: ...

        def __getitem__(self, idx: int | slice) -> ModuleT | TypedModuleList[ModuleT]: ...


class TypedSequential(nn.Sequential, Generic[ModuleT]):
    """`nn.Sequential` of `ModuleT`s."""

    def __init__(self, *modules: ModuleT) -> None:
        super().__init__(*modules)

    if TYPE_CHECKING:

        def __iter__(self) -> Iterator[ModuleT]: ...

        @overload
        def __getitem__(self, idx: int) -> ModuleT: ...

        @overload
        def __getitem__(self, idx: slice) -> TypedSequential[ModuleT]: ...

        def __getitem__(self, idx: int | slice) -> ModuleT | TypedSequential[ModuleT]: ...
