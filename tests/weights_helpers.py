"""Damaged checkpoint files, as a copy or a disk leaves them, for the loaders' refusals."""

from __future__ import annotations

import zipfile
from pathlib import Path


def damage_first_tensor_record(source: Path, target: Path) -> Path:
    """`source` (a torch.save zip) written to `target` with its first tensor record's local header overwritten:
    the zip's list of entries still reads, and torch's zip reader fails on the record ("PytorchStreamReader failed
    reading file data/0: invalid header or archive is corrupted. This is an internal miniz error. ...")."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        record = next(info for info in archive.infolist() if info.filename.endswith("/data/0"))
    data[record.header_offset : record.header_offset + 4] = b"XXXX"
    target.write_bytes(bytes(data))
    return target
