"""Mutation fuzz of `srfeat upscale --model` and `srfeat convert` on damaged model files: a tiny generator saved as
safetensors, as a PyTorch `.pt` (a zip archive) and exported to ONNX, and a tiny one as the authors' tensorlayer `.npz`,
is damaged at random (bits flipped, bytes overwritten, cut, removed or repeated, and its structure's fields changed: a
safetensors header's shapes, dtypes, offsets, names, metadata and length; the zip records' sizes, offsets and counts,
and a `.pt`'s pickle (its tensors' sizes, strides and offsets, storage types, bits) with its CRC made right;
an ONNX model's weights' dims, types and data, its operators' attributes, types and inputs, its opset, IR version,
input shape and metadata; the `.npz`'s shape, its pickled arrays' dims and types and its pickle's bits, the archive
written again with its CRCs right), each used to upscale one small image (the `.npz`: converted) by `srfeat.cli.main`
in a child process under a memory limit and a timeout, and every outcome classed: a one-line error, a success (warned
or not), or what breaks the rules for untrusted input (a traceback or several error lines, a crash, a hang, an output
that is not 4x the image or a conversion srfeat cannot load, a temporary file left, the output the user had overwritten
by a failed run). A success whose output is one flat colour is listed for review (`flat output`): weights that make
nothing of the picture.

    PYTHONPATH=. python3 scripts/fuzz_models.py /tmp/modelfuzz --per-seed 500    # 2,000 files, about 5 minutes

Results go to FOLDER/results.jsonl (one JSON object a file: seed, mutation, classes, log), counts to stdout; a file is
made again from its seed, `--seed` and its number (`--only SEED:NUMBER` reruns it, keeping it as FOLDER/repro.*).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one core a run: the fuzz runs beside other work
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from PIL import Image

from scripts.fuzzing import (
    arguments,
    extreme,
    find_all,
    fuzz,
    header_field,
    invert_a_byte,
    mutate,
    outcome_classes,
    prepared,
    run_one,
)

SCALE, IMAGE_SIZE = 4, (24, 20)  # the tiny model upscales 4x; the image it upscales, (width, height)
SEEDS = ["tiny.safetensors", "tiny.pt", "tiny.onnx", "tiny_authors.npz"]  # the .npz through `srfeat convert`
AUTHORS_FEATURES, AUTHORS_BLOCKS = 8, 2
NUMPY_TYPE_CODES = [b"f4", b"f8", b"f2", b"i4", b"u1", b"c8", b"V4", b"S4", b"U4", b"M8", b"O8", b"b1"]
SAFETENSORS_DTYPES = ["F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "C64", "XX", ""]
ONNX_OPERATORS = ["Relu", "Conv", "Resize", "DepthToSpace", "Identity", "Add", "Loop", "Unknown", "ConvTranspose"]


def write_seed(path: Path) -> None:
    """The tiny model `prepared` saves (FOLDER/tiny.safetensors), as the seed `path.name` asks."""
    import torch

    from srfeat.cli import main as srfeat_main
    from srfeat.weights import load_generator

    tiny = path.parent.parent / "tiny.safetensors"
    if path.suffix == ".safetensors":
        path.write_bytes(tiny.read_bytes())
    elif path.suffix == ".pt":
        torch.save(load_generator(tiny).state_dict(), path)
    elif path.suffix == ".npz":
        write_authors_npz(path, np.random.default_rng(0))
    elif srfeat_main(["export", "--model", str(tiny), "-o", str(path)]) != 0:
        raise SystemExit(f"the tiny model's ONNX export failed: {path}")


def write_authors_npz(path: Path, rng: np.random.Generator) -> None:
    """A tiny generator's random parameters as the authors' files hold theirs (tensorlayer's `save_npz`: one object
    array `params`, in their order, convolutions HWIO; see `srfeat.weights.authors`)."""
    features = AUTHORS_FEATURES

    def conv(size: int, inputs: int, outputs: int, bias: bool = True) -> list[np.ndarray]:
        weight = rng.normal(0, 0.5 / np.sqrt(size * size * inputs), (size, size, inputs, outputs))
        return [weight.astype(np.float32)] + [rng.normal(0, 0.1, outputs).astype(np.float32)] * bias

    def norm() -> list[np.ndarray]:  # beta, gamma, moving mean, moving variance
        return [rng.uniform(low, high, features).astype(np.float32) for low, high in ((-0.1, 0.1), (0.5, 1.5)) * 2]

    arrays = conv(9, 3, features)
    for _ in range(AUTHORS_BLOCKS):
        arrays += conv(3, features, features, bias=False) + norm() + conv(3, features, features, bias=False) + norm()
    for _ in range(AUTHORS_BLOCKS - 1):  # the long skips' 1x1 convs, appended after the blocks
        arrays += conv(1, features, features, bias=False)
    for _ in range(2):  # two x2 upsampling stages
        arrays += conv(3, features, 4 * features)
    arrays += conv(3, features, 3)
    params = np.empty(len(arrays), dtype=object)
    params[:] = arrays
    np.savez(path, params=params)


def safetensors_field(rng: random.Random, data: bytearray) -> str:
    """One field of the JSON header changed, its stated length made right again (or, one time in five, not), or the
    length itself changed."""
    length = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(bytes(data[8 : 8 + length]))
        names = [name for name in header if name != "__metadata__"]
    except (ValueError, TypeError):
        return invert_a_byte(rng, data)
    what = rng.choice(["shape", "shape", "dtype", "offsets", "offsets", "name", "metadata", "length"])
    if what == "length" or not names:
        data[:8] = (new := extreme(rng, length, 64)).to_bytes(8, "little")
        return f"safetensors header length {length}->{new}"
    name = rng.choice(names)
    entry = header[name]
    if what == "shape" and entry.get("shape"):
        axis = rng.randrange(len(entry["shape"]))
        old = entry["shape"][axis]
        entry["shape"][axis] = new = rng.choice([extreme(rng, old, 32), extreme(rng, old, 64), -1, 0])
        said = f"{name} shape[{axis}] {old}->{new}"
    elif what == "shape":
        entry["shape"] = [rng.choice([0, 1, 2])]
        said = f"{name} shape [] -> {entry['shape']}"
    elif what == "dtype":
        old, entry["dtype"] = entry.get("dtype"), rng.choice(SAFETENSORS_DTYPES)
        said = f"{name} dtype {old}->{entry['dtype']}"
    elif what == "offsets":
        end = rng.randrange(2)
        old = entry["data_offsets"][end]
        entry["data_offsets"][end] = new = extreme(rng, old, rng.choice([32, 64]))
        said = f"{name} data_offsets[{end}] {old}->{new}"
    elif what == "name":
        new_name = rng.choice([name.replace(".", ".1", 1), name + "x", name.split(".")[-1], ""])
        header[new_name] = header.pop(name)
        said = f"tensor {name!r} renamed {new_name!r}"
    else:
        header["__metadata__"] = new_metadata = rng.choice([{}, {"format": "tf"}, {"x": "1" * 100}, "text", None])
        said = f"__metadata__ -> {new_metadata!r}"
    text = json.dumps(header).encode()
    stated = len(text) if rng.random() < 0.8 else length
    data[:] = stated.to_bytes(8, "little") + text + data[8 + length :]
    return said + ("" if stated == len(text) else f" (header length kept at {length})")


def zip_field(rng: random.Random, data: bytearray) -> str:
    """A version, compression method, size, count or offset of one of the zip archive's records (a `.pt` is one): a
    local file header, a central directory entry or the end record."""
    fields = {
        # version needed, compression method; compressed, uncompressed size; name, extra length
        b"PK\x03\x04": [(4, 2), (8, 2), (18, 4), (22, 4), (26, 2), (28, 2)],
        # version needed, compression method; sizes; name, extra length; local header
        b"PK\x01\x02": [(6, 2), (10, 2), (20, 4), (24, 4), (28, 2), (30, 2), (42, 4)],
        b"PK\x05\x06": [(8, 2), (10, 2), (12, 4), (16, 4)],  # entries here, in all; directory size, offset
    }
    records = [(at, signature) for signature in fields for at in find_all(data, signature)]
    if not records:
        return invert_a_byte(rng, data)
    at, signature = rng.choice(records)
    return header_field(rng, data, [(at + offset, width) for offset, width in fields[signature]], "little", "zip")


def pt_field(rng: random.Random, data: bytearray) -> str:
    """A `.pt`'s pickle (`data.pkl`) changed in place, its CRC made right in both of its zip records: one of its
    small ints (a tensor's size, stride or offset, a storage's length), its storage type, or bits of it; or (one time
    in three) a zip record's field (`zip_field`)."""
    # torch writes sizes and CRC after the data (a data descriptor) and in the central directory, where data.pkl's
    # entry is the first; its local header gives where the data starts (30 bytes, the name, an extra field)
    central = data.find(b"PK\x01\x02")
    name_length = int.from_bytes(data[central + 28 : central + 30], "little") if central >= 0 else 0
    if rng.random() < 0.33 or central < 0 or not data[central + 46 : central + 46 + name_length].endswith(b"data.pkl"):
        return zip_field(rng, data)
    size = int.from_bytes(data[central + 20 : central + 24], "little")
    local = int.from_bytes(data[central + 42 : central + 46], "little")
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    pickled = data[start : start + size]
    if not pickled or data[local : local + 4] != b"PK\x03\x04":  # damaged before (a zip field)
        return zip_field(rng, data)
    what = rng.choice(["int", "int", "storage", "bits"])
    ints = [found.start() for found in re.finditer(rb"[KM]", pickled)]  # BININT1, BININT2 (may match other bytes)
    storages = [found.start() for found in re.finditer(rb"(Float|Short)Storage", pickled)]
    if what == "int" and ints:
        at = rng.choice(ints) + 1
        width = 1 if pickled[at - 1 : at] == b"K" else 2
        old = int.from_bytes(pickled[at : at + width], "little")
        pickled[at : at + width] = (new := extreme(rng, old, 8 * width)).to_bytes(width, "little")
        said = f"data.pkl int at {at}: {old}->{new}"
    elif what == "storage" and storages:
        at = rng.choice(storages)
        old, new = (b"Float", b"Short") if pickled[at : at + 5] == b"Float" else (b"Short", b"Float")
        pickled[at : at + 5] = new
        said = f"data.pkl storage {old.decode()}Storage->{new.decode()}Storage"
    else:
        for _ in range(count := rng.choice([1, 2, 8])):
            pickled[rng.randrange(len(pickled))] ^= 1 << rng.randrange(8)
        said = f"{count} bit(s) of data.pkl flipped"
    data[start : start + size] = pickled
    crc = zlib.crc32(pickled).to_bytes(4, "little")
    data[central + 16 : central + 20] = crc
    if data[local + 6] & 8:  # a data descriptor after the data holds it (its signature optional)
        descriptor = start + size + 4 * (data[start + size : start + size + 4] == b"PK\x07\x08")
        data[descriptor : descriptor + 4] = crc
    else:  # the local header does
        data[local + 14 : local + 18] = crc
    return said + " (CRC made right)"


def onnx_field(rng: random.Random, data: bytearray) -> str:
    """One part of the ONNX model changed through `onnx` itself, which writes it back well-formed: what a reader must
    judge by its meaning, not its bytes."""
    import onnx

    try:
        model = onnx.load_from_string(bytes(data))
    except Exception:  # noqa: BLE001 - damaged before: bytes changed instead
        return invert_a_byte(rng, data)
    graph = model.graph
    what = rng.choice(["dims", "type", "weights", "attribute", "attribute", "operator", "input", "node", "model"])
    weights = [tensor for tensor in graph.initializer if tensor.dims]
    nodes = list(graph.node)
    if what in ("dims", "type", "weights") and weights:
        tensor = rng.choice(weights)
        if what == "dims":
            axis = rng.randrange(len(tensor.dims))
            old = tensor.dims[axis]
            tensor.dims[axis] = new = rng.choice([0, 1, old * 2, old + 1, 2**31, 2**40, -1])
            said = f"weight {tensor.name} dims[{axis}] {old}->{new}"
        elif what == "type":
            old, tensor.data_type = tensor.data_type, rng.choice([10, 11, 7, 6, 2, 16, 9, 0, 99])
            said = f"weight {tensor.name} data_type {old}->{tensor.data_type}"
        else:
            values = np.frombuffer(tensor.raw_data, np.float32).copy() if tensor.data_type == 1 else None
            if values is None or not values.size or rng.random() < 0.4:
                tensor.raw_data = tensor.raw_data[: rng.randrange(max(1, len(tensor.raw_data)))]
                said = f"weight {tensor.name} data cut to {len(tensor.raw_data)} bytes"
            else:
                values[rng.randrange(values.size)] = new = rng.choice([math.nan, math.inf, -math.inf, 1e30, 3e38])
                tensor.raw_data = values.tobytes()
                said = f"weight {tensor.name} one value -> {new}"
    elif what == "attribute" and (with_attributes := [node for node in nodes if node.attribute]):
        node = rng.choice(with_attributes)
        attribute = rng.choice(node.attribute)
        said = f"{node.op_type} {node.name} attribute {attribute.name}"
        if attribute.ints:
            index = rng.randrange(len(attribute.ints))
            old = attribute.ints[index]
            attribute.ints[index] = new = rng.choice([0, -1, 1, old + 1, old * 2, 2**31, 10**6])
            said += f"[{index}] {old}->{new}"
        elif attribute.type == onnx.AttributeProto.INT:
            old, attribute.i = attribute.i, rng.choice([0, -1, 1, attribute.i + 1, 2**31, 10**6])
            said += f" {old}->{attribute.i}"
        elif attribute.type == onnx.AttributeProto.FLOAT:
            old, attribute.f = attribute.f, rng.choice([math.nan, math.inf, 0.0, -1.0, 1e30])
            said += f" {old}->{attribute.f}"
        else:
            old, attribute.s = attribute.s, rng.choice([b"", b"cubic", b"nonsense", b"linear", b"\xff"])
            said += f" {old!r}->{attribute.s!r}"
    elif what == "operator" and nodes:
        node = rng.choice(nodes)
        old, node.op_type = node.op_type, rng.choice(ONNX_OPERATORS)
        said = f"node {node.name} operator {old}->{node.op_type}"
    elif what == "input" and nodes:
        node = rng.choice([node for node in nodes if node.input] or nodes)
        names = [name for other in nodes for name in other.output] + [graph.input[0].name, "", "missing"]
        index = rng.randrange(max(1, len(node.input)))
        new_name = rng.choice(names)
        if node.input:
            said = f"node {node.name} input {node.input[index]!r}->{new_name!r}"
            node.input[index] = new_name
        else:
            node.input.append(new_name)
            said = f"node {node.name} input {new_name!r} added"
    elif what == "node" and nodes:
        index = rng.randrange(len(nodes))
        if rng.random() < 0.5:
            del graph.node[index]
            said = f"node {nodes[index].name} removed"
        else:
            graph.node.insert(index, nodes[index])
            said = f"node {nodes[index].name} repeated"
    else:
        said = model_field(rng, model)
    data[:] = model.SerializeToString()
    return said


def model_field(rng: random.Random, model: Any) -> str:
    """The model's opset, IR version, input shape or metadata changed."""
    which = rng.choice(["opset", "ir", "shape", "metadata"])
    if which == "opset":
        old, model.opset_import[0].version = model.opset_import[0].version, rng.choice([1, 7, 11, 17, 22, 99, 0])
        return f"opset {old}->{model.opset_import[0].version}"
    if which == "ir":
        old, model.ir_version = model.ir_version, rng.choice([0, 1, 3, 7, 11, 12, 99])
        return f"IR version {old}->{model.ir_version}"
    if which == "shape":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if dims:
            axis = rng.randrange(len(dims))
            dims[axis].dim_value = new = rng.choice([0, 1, 2, 4, 10**6])
            return f"input shape axis {axis} -> {new}"
    properties = model.metadata_props
    if not properties:
        return "nothing changed (no metadata)"
    entry = rng.choice(properties)
    if rng.random() < 0.3:
        properties.remove(entry)
        return f"metadata {entry.key!r} removed"
    old, entry.value = entry.value, rng.choice(["", "x", "-1", "0", "nan", "1e9", "4.5", "[]", "{", "9" * 40])
    return f"metadata {entry.key!r} {old[:40]!r}->{entry.value!r}"


def npz_field(rng: random.Random, data: bytearray) -> str:
    """The `params` entry changed (its npy header's shape, a pickled array's type code, bits of the pickle, or cut)
    and the archive written again, CRCs right: what the unpickler must judge (zip's own fields: `zip_field`)."""
    if rng.random() < 0.25:
        return zip_field(rng, data)
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
            name = archive.namelist()[0]
            entry = bytearray(archive.read(name))
    except Exception:  # noqa: BLE001 - damaged before (a zip field): zipfile raises many types; bytes changed instead
        return invert_a_byte(rng, data)
    what = rng.choice(["shape", "dims", "type", "bits", "cut"])
    shape = re.search(rb"'shape': \((\d+),\)", entry)
    codes = [found.start() for code in NUMPY_TYPE_CODES for found in re.finditer(re.escape(b"\x8c\x02" + code), entry)]
    # an array's dims: one-byte ints (BININT1, "K" and the value) between a mark "(" and a tuple "t"
    dims = [
        tuple_.start() + at + 1
        for tuple_ in re.finditer(rb"\((?:K[\s\S])+t", entry)
        for at in range(1, len(tuple_.group()) - 1, 2)
    ]
    if what == "shape" and shape:
        old = int(shape.group(1))
        new = rng.choice([0, 1, old - 1, old + 1, old * 2, 2**31, 2**62])
        entry[shape.start(1) : shape.end(1)] = str(new).encode()
        said = f"npy header shape ({old},)->({new},)"
    elif what == "dims" and dims:
        at = rng.choice(dims)
        old = entry[at]
        if rng.random() < 0.3:  # a four-byte int (BININT, "J") in its place: past what one byte holds
            new = rng.choice([256, 2**16, 2**31 - 1, -1, -(2**31)])
            entry[at - 1 : at + 1] = b"J" + new.to_bytes(4, "little", signed=True)
        else:
            entry[at] = new = rng.choice([0, 1, (old + 1) % 256, old * 2 % 256, 255])
        said = f"a pickled array's dim {old}->{new}"
    elif what == "type" and codes:
        at = rng.choice(codes) + 2
        old_code, entry[at : at + 2] = bytes(entry[at : at + 2]), rng.choice(NUMPY_TYPE_CODES)
        said = f"pickled type code {old_code.decode()}->{bytes(entry[at : at + 2]).decode()}"
    elif what == "cut" or len(entry) < 200:
        entry = entry[: rng.randrange(1, len(entry))]
        said = f"params entry cut to {len(entry)} bytes"
    else:
        for _ in range(count := rng.choice([1, 2, 8])):  # past the npy header (128 bytes): the pickle
            entry[rng.randrange(128, len(entry))] ^= 1 << rng.randrange(8)
        said = f"{count} bit(s) of the pickle flipped"
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w") as archive:
        archive.writestr(name, bytes(entry))
    data[:] = written.getvalue()
    return said + " (archive written again)"


def damage(rng: random.Random, seed: bytes, name: str) -> tuple[bytes, str]:
    """The seed model `name` damaged one way at random; what was done."""
    fields = {".safetensors": safetensors_field, ".pt": pt_field, ".onnx": onnx_field, ".npz": npz_field}
    field = fields[Path(name).suffix]
    return mutate(rng, seed, field)


def measure(source: Path, target: Path | None) -> dict[str, Any]:
    """The output's size, and whether it is one flat colour; of a conversion, whether srfeat loads what it wrote."""
    if target is None:
        return {}
    if target.suffix == ".safetensors":
        from srfeat.weights import load_generator

        try:
            load_generator(target)
        except Exception as error:  # noqa: BLE001 - any refusal of its own output is the finding
            return {"converted": f"{type(error).__name__}: {error}"[:300]}
        return {"converted": "loads"}
    with Image.open(target) as output:
        pixels = np.asarray(output)
        return {"output": list(output.size), "flat": bool(pixels.size) and bool((pixels == pixels.flat[0]).all())}


def classes_of(result: dict[str, Any]) -> list[str]:
    """What happened; the rule-breaking classes in capitals."""
    found, _ = outcome_classes(result)
    if "converted" in result:
        return found + ([] if result["converted"] == "loads" else ["CONVERTED UNUSABLE"])
    if result.get("code") == 0 and "measuring" not in result:
        if "output" not in result:
            found.append("NO OUTPUT")
        elif result["output"] != [SCALE * side for side in IMAGE_SIZE]:
            found.append("WRONG SIZE")
        elif result["flat"]:
            found.append("flat output")
    return found


def main() -> int:
    args = arguments((__doc__ or "").split("\n\n")[0], 200, len(SEEDS), "tiny.onnx:38")
    prepared(args.folder, SEEDS, write_seed)
    width, height = IMAGE_SIZE
    ramp = np.add.outer(np.arange(height) * 9, np.arange(width) * 5) % 256
    image = args.folder / "in.png"
    Image.fromarray(np.stack([ramp, ramp[::-1], 255 - ramp], axis=2).astype(np.uint8)).save(image)

    def run(data: bytes, name: str, folder: Path, memory: int) -> dict[str, Any]:
        model = f"model{Path(name).suffix}"
        if model == "model.npz":  # the authors' weights: converted, not upscaled with
            convert = ["convert", model, "-o", "out.safetensors", "--overwrite"]
            return run_one(
                data, model, "out.safetensors", folder, folder / model, memory, args.timeout, measure, None, convert
            )
        return run_one(
            image.read_bytes(),
            "in.png",
            "out.png",
            folder,
            folder / model,
            memory,
            args.timeout,
            measure,
            {model: data},
        )

    return fuzz(args, SEEDS, damage, run, classes_of)


if __name__ == "__main__":
    sys.exit(main())
