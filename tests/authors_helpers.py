"""The authors' weights files, written as tensorlayer's `save_npz(net_g.all_params)` of their `SRGAN_g`
writes them, from named random parameters: the real files cannot be downloaded here (and are AGPL)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

Params = dict[str, np.ndarray]


def random_params(features: int, blocks: int, stages: int, seed: int = 0) -> Params:
    """Named parameters of the authors' SRGAN_g (HWIO kernels), random but of a sane scale."""
    rng = np.random.default_rng(seed)

    def conv(name: str, k: int, cin: int, cout: int, bias: bool = True) -> None:
        params[f"{name}/W"] = rng.normal(0, 0.7 / np.sqrt(k * k * cin), (k, k, cin, cout)).astype(np.float32)
        if bias:
            params[f"{name}/b"] = rng.normal(0, 0.1, cout).astype(np.float32)

    def norm(name: str) -> None:
        params[f"{name}/beta"] = rng.normal(0, 0.1, features).astype(np.float32)
        params[f"{name}/gamma"] = rng.uniform(0.5, 1.5, features).astype(np.float32)
        params[f"{name}/moving_mean"] = rng.normal(0, 0.1, features).astype(np.float32)
        params[f"{name}/moving_variance"] = rng.uniform(0.5, 2.0, features).astype(np.float32)

    params: Params = {}
    conv("n64s1/c", 9, 3, features)
    for i in range(blocks):
        conv(f"n64s1/c1/{i}", 3, features, features, bias=False)
        norm(f"n64s1/b1/{i}")
        conv(f"n64s1/c2/{i}", 3, features, features, bias=False)
        norm(f"n64s1/b2/{i}")
        conv(f"n64s1/c3/{i}", 1, features, features, bias=False)  # built for every block, even the last
    for s in range(1, stages + 1):
        conv(f"n256s1/{s}", 3, features, 4 * features)
    conv("out", 3, features, 3)
    return params


def tensorlayer_order(params: Params, blocks: int, stages: int, with_unused_skip: bool = False) -> list[np.ndarray]:
    """net_g.all_params: the main chain in build order, then (appended by the ElementwiseLayer that
    sums them) the long-skip convs of blocks 1..blocks-1; block 16's is not in the sum, so not listed."""
    names = ["n64s1/c/W", "n64s1/c/b"]
    for i in range(blocks):
        for layer in ("c1", "b1", "c2", "b2"):
            if layer.startswith("c"):
                names.append(f"n64s1/{layer}/{i}/W")
            else:
                names += [f"n64s1/{layer}/{i}/{v}" for v in ("beta", "gamma", "moving_mean", "moving_variance")]
    names += [f"n64s1/c3/{i}/W" for i in range(blocks if with_unused_skip else blocks - 1)]
    for s in range(1, stages + 1):
        names += [f"n256s1/{s}/W", f"n256s1/{s}/b"]
    names += ["out/W", "out/b"]
    return [params[name] for name in names]


def write_tensorlayer_npz(path: Path, arrays: list[np.ndarray], protocol: int | None = None) -> Path:
    """np.savez(name, params=list): NumPy stores the list as one pickled object array.

    `protocol=2` writes the pickle as NumPy did for Python 3.4 in 2018 (bytes via _codecs.encode).
    """
    container = np.empty(len(arrays), dtype=object)
    for index, array in enumerate(arrays):
        container[index] = array
    if protocol is None:
        np.savez(path, params=container)
        return path
    entry = io.BytesIO()
    npy_format.write_array_header_1_0(entry, npy_format.header_data_from_array_1_0(container))
    pickle.dump(container, entry, protocol=protocol)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("params.npy", entry.getvalue())
    return path


def rewritten_entry(path: Path, old: bytes, new: bytes) -> Path:
    """The npz at `path` with `old` in its `params` entry made `new`, written again (its CRC right)."""
    entry = zipfile.ZipFile(path).read("params.npy")
    assert old in entry
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("params.npy", entry.replace(old, new))
    return path
