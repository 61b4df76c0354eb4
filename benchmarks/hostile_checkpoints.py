"""Peak memory of loading hostile generator checkpoints, each in a fresh process.

    python3 -m benchmarks.hostile_checkpoints

Each file is the bundled `default` generator (fp16 safetensors) with one tensor added or
replaced: a key naming block 3,000 (a loader that trusts it builds a 3,001-block network, 4 GB)
or a head with 20,000 output channels (a 14 GB network); or saved as a `.pt` whose first tensor
record is 2 GB of zeros deflated to 2 MB (`zip-bomb`: torch's unmapped reader inflates a record
before it checks its size). `real` is the unmodified file, for scale. A child process loads
each with `srfeat.weights.load_generator` and reports its peak resident memory and the error it
raised. The peak is the child's own (VmHWM on Linux): ru_maxrss is not, since a child started
by vfork and exec inherits its parent's high-water mark, so under pytest it reported the test
process's 1.5 GB rather than the loader's 0.24.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from srfeat.weights import bundled_dir

REPO = Path(__file__).resolve().parents[1]
KINDS = ("extra-block", "wide-head", "zip-bomb", "real")

LOAD_AND_MEASURE = textwrap.dedent(
    """
    import resource, sys
    # A guard for the machine: a loader that allocated what a header claims fails here
    # instead of taking the host's memory.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    from srfeat.errors import SRFeatError
    from srfeat.weights import load_generator

    try:
        load_generator(sys.argv[1])
        message = "loaded"
    except SRFeatError as error:
        message = str(error)
    try:  # this process's own peak (ru_maxrss would include the parent's, see the docstring)
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        peak_kb = int(status.split()[0])
    except (OSError, IndexError, ValueError):  # not Linux
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{peak_kb / 1024:.0f}")
    print(message)
    """
)


def deflated_bomb(source: Path, target: Path, inflated_bytes: int = 2 << 30) -> Path:
    """`source`, a torch.save zip, as `target` with its first tensor record replaced by `inflated_bytes`
    of zeros, deflated (2 GB to 2 MB); the other records as they were."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as bomb:
        for info in original.infolist():
            if not info.filename.endswith("/data/0"):
                bomb.writestr(info.filename, original.read(info.filename))
                continue
            deflated = zipfile.ZipInfo(info.filename)
            deflated.compress_type = zipfile.ZIP_DEFLATED
            with bomb.open(deflated, "w", force_zip64=True) as record:
                for _ in range(inflated_bytes >> 24):
                    record.write(bytes(1 << 24))
    return target


def hostile_file(kind: str, folder: Path) -> Path:
    """The bundled generator with one tensor added (`extra-block`) or replaced (`wide-head`), or as
    a .pt zip bomb (`zip-bomb`)."""
    state = load_file(str(bundled_dir() / "default.safetensors"))
    if kind == "zip-bomb":
        torch.save(state, folder / "whole.pt")
        return deflated_bomb(folder / "whole.pt", folder / "zip-bomb.pt")
    if kind == "extra-block":
        state["body.3000.conv1.weight"] = state["body.0.conv1.weight"].clone()
    elif kind == "wide-head":
        state["head.weight"] = torch.zeros(20_000, 3, 9, 9, dtype=torch.float16)
    elif kind != "real":
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    path = folder / f"{kind}.safetensors"
    save_file(state, str(path))
    return path


def measure(path: Path) -> tuple[int, str]:
    """(peak resident MB, error message or "loaded") of loading `path` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", LOAD_AND_MEASURE, str(path)],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    peak_mb, message = child.stdout.splitlines()
    return int(peak_mb), message


def main() -> None:
    argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for kind in KINDS:
            peak_mb, message = measure(hostile_file(kind, Path(folder)))
            print(f"{kind:12s} peak {peak_mb:5d} MB  {message.replace(folder + '/', '')}")


if __name__ == "__main__":
    main()
