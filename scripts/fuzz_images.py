"""Mutation fuzz of `srfeat upscale` on damaged images: small seed files (PNG of 8 and 16 bits, with alpha and a
palette; baseline and progressive JPEG; TIFF of deflate, LZW and JPEG in strips, and of 16 bits in tiles and in LZMA
strips; WebP, lossy and lossless; AVIF; BMP, GIF, 16-bit PPM and PGM) are damaged at random (bits flipped, bytes
overwritten, cut, removed or repeated, and the fields their structure states sizes in changed: PNG chunk lengths and
IHDR, with the chunk's CRC made right again half the time; JPEG segment lengths and frame sizes; TIFF tags' values; RIFF
and VP8 sizes; AVIF's ISO box sizes, `ispe` size and other box fields; BMP and GIF header fields; PNM header numbers),
each upscaled by `srfeat.cli.main` in a child process under a memory limit and a timeout, and every outcome classed: a
one-line error, a success (warned or not), or what breaks the rules for untrusted input (a traceback or several error
lines, a crash, a hang, an output that is not 4x the image srfeat reads, a temporary file left, the output the user had
overwritten by a failed run). A success PIL itself refuses to decode is listed for review (`pil refuses`): srfeat reads
some files with its own readers, and may be right.

    PYTHONPATH=. python3 scripts/fuzz_images.py /tmp/imagefuzz --per-seed 100    # 1,900 files, about 10 minutes

Results go to FOLDER/results.jsonl (one JSON object a file: seed, mutation, classes, log), counts to stdout; a file is
made again from its seed, `--seed` and its number (`--only SEED:NUMBER` reruns it, keeping it as FOLDER/repro.*).
"""

from __future__ import annotations

import os
import random
import re
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one core a run: the fuzz runs beside other work
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import tifffile
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

SCALE = 4  # the tiny model upscales 4x, as every srfeat model does
SEEDS = [
    "rgb.png",
    "rgba.png",
    "grey16.png",
    "rgba16.png",
    "palette.png",
    "baseline.jpg",
    "progressive.jpg",
    "deflate.tif",
    "lzw.tif",
    "jpeg.tif",
    "rgb16.tif",
    "lzma16.tif",
    "lossy.webp",
    "lossless.webp",
    "rgb.avif",
    "rgb.bmp",
    "palette.gif",
    "rgb16.ppm",
    "grey.pgm",
]
PNG_CHUNKS = [b"IHDR", b"IDAT", b"PLTE", b"tRNS", b"IEND", b"gAMA", b"sRGB", b"pHYs"]
AVIF_BOXES = [b"ftyp", b"meta", b"pitm", b"iloc", b"iinf", b"infe", b"iprp", b"ipco", b"ispe", b"pixi", b"av1C"]
AVIF_BOXES += [b"colr", b"ipma", b"mdat"]
JPEG_MARKERS = [0xC0, 0xC2, 0xC4, 0xDB, 0xDA, 0xE0, 0xDD]  # SOF0, SOF2, DHT, DQT, SOS, APP0, DRI
TIFF_TAGS = [256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 322, 323, 324, 325, 338, 339]
RIFF_CHUNKS = [b"RIFF", b"VP8 ", b"VP8L", b"VP8X", b"ALPH"]


def write_seed(path: Path) -> None:
    """`path`'s kind (its name) of a 40x28 crop of scikit-image's astronaut: small, not square, with detail."""
    from skimage import data as samples

    rgb = np.ascontiguousarray(samples.astronaut()[100:128, 150:190])
    name, image = path.name, Image.fromarray(rgb)
    if name == "rgba.png":
        alpha = np.linspace(0, 255, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint8)
        Image.fromarray(np.dstack([rgb, alpha])).save(path)
    elif name == "grey16.png":
        Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(path)
    elif name == "rgba16.png":  # srfeat's own reader (PIL reads 16-bit colour PNGs at 8 bits)
        from srfeat.data.png16 import write_png16

        alpha = np.linspace(0, 65535, rgb.shape[0] * rgb.shape[1]).reshape(rgb.shape[:2]).astype(np.uint16)
        write_png16(path, np.dstack([rgb.astype(np.uint16) * 257, alpha]))
    elif name in ("palette.png", "palette.gif"):
        image.quantize(32).save(path)
    elif name == "progressive.jpg":
        image.save(path, quality=90, progressive=True)
    elif name == "deflate.tif":
        tifffile.imwrite(path, rgb, compression="zlib", rowsperstrip=8)
    elif name == "lzw.tif":
        image.save(path, compression="tiff_lzw")
    elif name == "jpeg.tif":
        image.save(path, compression="jpeg")
    elif name == "rgb16.tif":
        tifffile.imwrite(path, rgb.astype(np.uint16) * 257, tile=(16, 16))
    elif name == "lzma16.tif":  # strips, and a compression whose data srfeat checks itself
        tifffile.imwrite(path, rgb.astype(np.uint16) * 257, compression="lzma", rowsperstrip=8)
    elif name == "lossy.webp":
        image.save(path, quality=80)
    elif name == "lossless.webp":
        image.save(path, lossless=True)
    elif name == "rgb.avif":
        image.save(path, quality=80)
    elif name == "rgb16.ppm":
        data = (rgb.astype(">u2") * 257).tobytes()
        path.write_bytes(f"P6\n{rgb.shape[1]} {rgb.shape[0]}\n65535\n".encode() + data)
    elif name == "grey.pgm":
        Image.fromarray(rgb[..., 0]).save(path)
    else:  # rgb.png, baseline.jpg, rgb.bmp
        image.save(path)


def png_field(rng: random.Random, data: bytearray) -> str:
    chunk = rng.choice(PNG_CHUNKS)
    places = [at for at in range(8, len(data) - 4) if data.startswith(chunk, at) and at >= 4]
    if not places:
        return invert_a_byte(rng, data)
    at = rng.choice(places)
    (length,) = struct.unpack(">I", data[at - 4 : at])
    if rng.random() < 0.4 or chunk == b"IEND":  # the chunk's length
        data[at - 4 : at] = struct.pack(">I", new := extreme(rng, length, 32))
        return f"PNG {chunk.decode()} length {length}->{new}"
    offset = at + 4 + rng.randrange(max(1, min(length, 13)))
    if chunk == b"IHDR" and rng.random() < 0.6:  # width, height (32 bits) or bit depth, colour type, interlace
        offset = at + 4 + rng.choice([0, 4, 8, 9, 12])
    width = 4 if offset - at - 4 in (0, 4) else 1
    if offset + width > len(data):
        return invert_a_byte(rng, data)
    old = int.from_bytes(data[offset : offset + width], "big")
    data[offset : offset + width] = (new := extreme(rng, old, 8 * width)).to_bytes(width, "big")
    said = f"PNG {chunk.decode()} byte {offset - at - 4} ({width}) {old}->{new}"
    if rng.random() < 0.5 and at + 4 + length + 4 <= len(data):  # the CRC made right: the reader must see it
        crc = zlib.crc32(data[at : at + 4 + length])
        data[at + 4 + length : at + 8 + length] = struct.pack(">I", crc)
        said += ", CRC made right"
    return said


def jpeg_field(rng: random.Random, data: bytearray) -> str:
    marker = rng.choice(JPEG_MARKERS)
    places = [at for at in range(2, len(data) - 9) if data[at] == 0xFF and data[at + 1] == marker]
    if not places:
        return invert_a_byte(rng, data)
    at = rng.choice(places)
    # the segment's length, or (a frame header) its precision, height, width, component count
    offset = at + 2 if rng.random() < 0.4 or marker not in (0xC0, 0xC2) else at + rng.choice([4, 5, 7, 9])
    width = 1 if offset in (at + 4, at + 9) else 2
    old = int.from_bytes(data[offset : offset + width], "big")
    data[offset : offset + width] = (new := extreme(rng, old, 8 * width)).to_bytes(width, "big")
    return f"JPEG marker {marker:02X} field at {offset - at:+d}: {old}->{new}"


def tiff_field(rng: random.Random, data: bytearray) -> str:
    order = "<" if data[:2] == b"II" else ">"
    (first,) = struct.unpack(order + "I", data[4:8])
    if first + 2 > len(data):
        return invert_a_byte(rng, data)
    (count,) = struct.unpack(order + "H", data[first : first + 2])
    entries = [first + 2 + 12 * number for number in range(count) if first + 14 + 12 * number <= len(data)]
    wanted = [at for at in entries if struct.unpack(order + "H", data[at : at + 2])[0] in TIFF_TAGS]
    if not wanted:
        return invert_a_byte(rng, data)
    at = rng.choice(wanted)
    tag, kind, values = struct.unpack(order + "HHI", data[at : at + 8])
    if rng.random() < 0.25:  # the count of values
        data[at + 4 : at + 8] = struct.pack(order + "I", new := extreme(rng, values, 32))
        return f"TIFF tag {tag} count {values}->{new}"
    short = kind == 3 and values <= 2
    fmt = order + ("H" if short else "I")
    (old,) = struct.unpack(fmt, data[at + 8 : at + 10 if short else at + 12])
    data[at + 8 : at + 10 if short else at + 12] = struct.pack(fmt, new := extreme(rng, old, 16 if short else 32))
    return f"TIFF tag {tag} value {old}->{new}"


def avif_field(rng: random.Random, data: bytearray) -> str:
    """An AVIF's ISO box: its size, or a field of its body (`ispe`'s width or height, `iloc`'s extents, ...)."""
    places = [at for box in AVIF_BOXES for at in find_all(data, box) if at >= 4]
    if not places:
        return invert_a_byte(rng, data)
    at = rng.choice(places)
    box = bytes(data[at : at + 4]).decode()
    if rng.random() < 0.4:  # the box's size, before its type
        return header_field(rng, data, [(at - 4, 4)], "big", f"AVIF {box} size")
    if box == "ispe":  # version and flags, then width and height
        return header_field(rng, data, [(at + 8, 4), (at + 12, 4)], "big", "AVIF ispe")
    body = [(at + 4 + offset, width) for offset in range(0, 32, 2) for width in (1, 2, 4)]
    return header_field(rng, data, body, "big", f"AVIF {box}")


def riff_field(rng: random.Random, data: bytearray) -> str:
    chunk = rng.choice(RIFF_CHUNKS)
    places = [at for at in range(len(data) - 8) if data.startswith(chunk, at)]
    if not places:
        return invert_a_byte(rng, data)
    at = rng.choice(places)
    if chunk == b"VP8X" and rng.random() < 0.5:  # the canvas width or height less one (24 bits)
        offset = at + rng.choice([12, 15])
        old = int.from_bytes(data[offset : offset + 3], "little")
        data[offset : offset + 3] = (new := extreme(rng, old, 24)).to_bytes(3, "little")
        return f"VP8X canvas field at {offset - at:+d}: {old}->{new}"
    if chunk == b"VP8 " and rng.random() < 0.5 and at + 18 <= len(data):  # the key frame's width or height
        offset = at + rng.choice([14, 16])
        (old,) = struct.unpack("<H", data[offset : offset + 2])
        data[offset : offset + 2] = struct.pack("<H", new := extreme(rng, old, 16))
        return f"VP8 frame size field at {offset - at:+d}: {old}->{new}"
    (old,) = struct.unpack("<I", data[at + 4 : at + 8])
    data[at + 4 : at + 8] = struct.pack("<I", new := extreme(rng, old, 32))
    return f"{chunk.decode().strip()} size {old}->{new}"


def pnm_field(rng: random.Random, data: bytearray) -> str:
    """A number of the text header (width, height, maximum) replaced by another."""
    numbers = list(re.finditer(rb"\d+", bytes(data[:40])))[1:4]  # after the magic's digit
    if not numbers:
        return invert_a_byte(rng, data)
    found = rng.choice(numbers)
    old = int(found.group())
    new = rng.choice([0, 1, old + 1, old - 1, old * 1000, 2**31, 2**32 + old, 10**30, 256, 65536])
    data[found.start() : found.end()] = str(new).encode()
    return f"PNM header number {old}->{new}"


def damage(rng: random.Random, seed: bytes, name: str) -> tuple[bytes, str]:
    """The seed image `name` damaged one way at random; what was done."""
    suffix = Path(name).suffix

    def field(rng: random.Random, data: bytearray) -> str:
        if suffix == ".png":
            return png_field(rng, data)
        if suffix == ".jpg":
            return jpeg_field(rng, data)
        if suffix == ".tif":
            return tiff_field(rng, data)
        if suffix == ".webp":
            return riff_field(rng, data)
        if suffix == ".avif":
            return avif_field(rng, data)
        if suffix == ".bmp":  # file size, data offset, width, height, planes, bits, compression, data size, colours
            places = [(2, 4), (10, 4), (18, 4), (22, 4), (26, 2), (28, 2), (30, 4), (34, 4), (46, 4)]
            return header_field(rng, data, places, "little", "BMP")
        if suffix == ".gif":  # screen width, height, flags; the image descriptor's after the palette
            descriptor = data.find(b"\x2c", 13 + 3 * 2 ** ((data[10] & 7) + 1) if len(data) > 10 else 13)
            places = [(6, 2), (8, 2), (10, 1)] + [(descriptor + at, 2) for at in (1, 3, 5, 7)] * (descriptor > 0)
            return header_field(rng, data, places, "little", "GIF")
        return pnm_field(rng, data)

    return mutate(rng, seed, field)


def measure(source: Path, target: Path | None) -> dict[str, Any]:
    """The size srfeat reads the input at, the output's, and whether PIL itself decodes the input."""
    from srfeat.data.io import read_raw_image

    if target is None:
        return {}
    height, width = read_raw_image(source).array.shape[:2]
    with Image.open(target) as output:
        found: dict[str, Any] = {"input": [width, height], "output": list(output.size)}
    try:
        with Image.open(source) as image:
            image.load()
    except Exception as error:  # noqa: BLE001 - any refusal is worth a look
        found["pil"] = f"{type(error).__name__}: {error}"[:200]
    return found


def classes_of(result: dict[str, Any]) -> list[str]:
    """What happened; the rule-breaking classes in capitals."""
    found, _ = outcome_classes(result)
    if result.get("code") == 0 and "measuring" not in result:
        if "output" not in result:
            found.append("NO OUTPUT")
        elif result["output"] != [SCALE * side for side in result["input"]]:
            found.append("WRONG SIZE")
        if "pil" in result:
            found.append("pil refuses")
    return found


def main() -> int:
    args = arguments((__doc__ or "").split("\n\n")[0], 100, len(SEEDS), "jpeg.tif:38")
    model = prepared(args.folder, SEEDS, write_seed)

    def run(data: bytes, name: str, folder: Path, memory: int) -> dict[str, Any]:
        return run_one(data, f"in{Path(name).suffix}", "out.png", folder, model, memory, args.timeout, measure)

    return fuzz(args, SEEDS, damage, run, classes_of)


if __name__ == "__main__":
    sys.exit(main())
