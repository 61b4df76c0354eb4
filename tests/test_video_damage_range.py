"""Damage at a range's edges: frames are counted as they decode, so frames lost before `--frames A:B`'s start move
the range later in the file (said, with the time it then starts at); frames lost after the last one shown, where
no later frame shows the gap, are missing from a range that runs to the file's end (named like any other; a damaged
packet that decoder threads drop at the flush is an error, as elsewhere)."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest

from srfeat.inference import Upscaler
from srfeat.video import FrameRange, VideoOptions

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from srfeat.video.lost_frames import LostFrames  # noqa: E402 - needs PyAV, checked above
from srfeat.video.pipeline import upscale_video  # noqa: E402
from tests.test_video_damage import (  # noqa: E402
    damaged_transport_stream,
    lines,
    said_places,
    warnings_of,
)
from tests.video_helpers import cli, frame_times, write_clip, write_encoded  # noqa: E402

FILLER_DATA = 12  # an H.264 NAL unit type decoders skip


def damaged_at_the_end(folder: Path) -> tuple[Path, int]:
    """A 24-frame H.264 MP4 whose last frame's slice is marked filler data (one byte changed): the decoder, its
    frames in threads as the upscaler's, drops it and the frames that refer to it without an error. With the index
    of the last frame it shows."""
    whole, damaged = folder / "whole.mp4", folder / "damaged.mp4"
    write_clip(whole, frames=24, audio=False)
    with av.open(str(whole)) as container:
        position = max((p for p in container.demux(video=0) if p.size), key=lambda p: p.pts).pos
    with av.open(str(whole)) as container:
        all_times = [frame.pts for frame in container.decode(video=0)]
    data = bytearray(whole.read_bytes())
    data[position + 4] = FILLER_DATA  # the slice's NAL header, after its 4-byte length
    damaged.write_bytes(bytes(data))
    with av.open(str(damaged)) as container:
        container.streams.video[0].thread_type = "AUTO"
        shown = [frame.pts for frame in container.decode(video=0)]
    assert any(pts > shown[-1] for pts in all_times), "the damaged packet lost no frame at the end"
    return damaged, len(shown) - 1


def said_late(source: Path, places: list[tuple[int, float, int]], frames: str, start_time: float) -> str:
    total = sum(count for _, _, count in places)
    where = said_places(places)
    plural = "s" if total > 1 else ""
    return (
        f"{source}: {total} frame{plural} before {frames} could not be decoded (a damaged file?): {where}; frames "
        f"are counted as they decode, so the range starts {total} frame{plural} late, at {start_time:.2f} s; "
        "repair or replace the file to get the frames asked for"
    )


def test_frames_lost_before_the_range_start_are_said_to_move_it(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`--frames A:B` past a lost frame upscaled the file's frames A+1 to B, as if they were A to B-1, unsaid."""
    source, places = damaged_transport_stream(tmp_path)
    start = places[-1][0] + 1  # the first frame shown after the last gap
    times = frame_times(source)
    output = tmp_path / "part.mkv"
    result = cli(source, "-o", output, "--model", model_path, "--codec", "ffv1", "--frames", f"{start}:{start + 4}")
    assert result.returncode == 0, result.stderr
    frames = f"--frames {start}:{start + 4}"
    assert lines(result, "WARNING") == ["WARNING: " + said_late(source, places, frames, times[start])]
    assert len(frame_times(output)) == 4

    options = VideoOptions(codec="ffv1", frames=FrameRange(start, start + 4))
    with caplog.at_level(logging.WARNING):
        upscale_video(source, tmp_path / "python.mkv", Upscaler(model_path, device="cpu"), options)
    frames = f"frames=FrameRange({start}, {start + 4})"
    assert warnings_of(caplog) == [said_late(source, places, frames, times[start])]


def test_a_range_starting_before_the_first_gap_is_not_said_to_start_late(tmp_path: Path, model_path: Path) -> None:
    source, places = damaged_transport_stream(tmp_path)
    first = places[0][0]
    result = cli(source, "-o", tmp_path / "part.mkv", "--model", model_path, "--codec", "ffv1", "--frames", f"{first}:")
    assert result.returncode == 0, result.stderr
    assert not [line for line in lines(result, "WARNING") if "late" in line], result.stderr


def test_frames_lost_after_the_last_frame_shown_are_named(tmp_path: Path, model_path: Path) -> None:
    """`--frames 4:` of a file whose last frames do not decode was a shorter output, unsaid (the count of frames
    the file lists is checked for the whole file only, and no later frame showed the gap); then a warning that it
    ended early, where one decoder thread, or the same damage earlier, fails: now it fails too, as there."""
    source, last = damaged_at_the_end(tmp_path)
    result = cli(source, "-o", tmp_path / "part.mkv", "--model", model_path, "--codec", "ffv1", "--frames", "4:")
    assert result.returncode == 1, result.stderr
    errors = [line for line in lines(result, "ERROR") if "input(s) failed" not in line]
    assert len(errors) == 1 and f"{source}: a frame " in errors[0] and "cannot be decoded" in errors[0], errors
    assert errors[0].endswith(f"(--frames 4:{last + 1} upscales the {last + 1 - 4} frames before it)"), errors
    assert not (tmp_path / "part.mkv").exists()

    # A range that ends before the damage reads no further than its end: nothing is missing from it.
    result = cli(source, "-o", tmp_path / "before.mkv", "--model", model_path, "--codec", "ffv1", "--frames", "4:12")
    assert result.returncode == 0, result.stderr
    assert lines(result, "WARNING") == [], result.stderr


def test_frames_lost_inside_and_at_the_end_are_said_to_be_jumped_over_and_to_end_the_output(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A frame lost between two shown is jumped over; two lost after the last one shown end the output early.
    Fed to the watcher directly: one file damaged both ways is not made reliably."""
    video = SimpleNamespace(average_rate=Fraction(12), time_base=Fraction(1, 12))
    # PyAV's stream stood in for: LostFrames reads only its time_base and average_rate
    lost = LostFrames(Path("clip.mp4"), video, FrameRange(), "mov,mp4,m4a,3gp,3g2,mj2")  # pyright: ignore[reportArgumentType]
    for pts in range(10):
        lost.sent(SimpleNamespace(size=100, pts=pts, dts=pts, is_discard=False, is_keyframe=False))
    for index, pts in enumerate([0, 1, 2, 4, 5, 6, 7]):  # 3 lost inside, 8 and 9 at the end
        lost.shown(pts, index)
    lost.ended()
    with caplog.at_level(logging.WARNING):
        lost.report()
    said = (
        "clip.mp4: 3 frames of the video could not be decoded and are missing from the output (a damaged file?): "
        "1 after frame 2 (0.17 s), 2 after frame 6 (0.58 s); the output jumps over the gaps between frames, its "
        "timing kept, and ends early, after frame 6; repair or replace the file to get them back, or "
        "frames=FrameRange(0, 3) upscales the frames before the first gap"
    )
    assert warnings_of(caplog) == [said]


def test_a_file_cut_a_frame_short_is_said_to_stop_early(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two frames' time short of the stated length was allowed: a Matroska file cut before its last frame (23 of
    24 written) was passed off as whole. Its last frame's own duration makes the check exact."""
    whole, cut = tmp_path / "whole.mkv", tmp_path / "cut.mkv"
    write_clip(whole, frames=24, audio=False)
    with av.open(str(whole)) as container:
        last = max((p for p in container.demux(video=0) if p.size), key=lambda p: p.pts).pos
    cut.write_bytes(whole.read_bytes()[:last])
    with caplog.at_level(logging.WARNING):
        upscale_video(cut, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions(codec="ffv1"))
    said = f"{cut}: the video stops at 1.92 s but the file says 2.00 s (truncated or damaged?); wrote its 23 frames"
    assert warnings_of(caplog) == [said]


@pytest.mark.parametrize("name", ["cfr.mp4", "vfr.mp4", "cfr.mkv", "vfr.mkv", "vp9.webm"])
def test_whole_files_are_not_said_to_stop_early(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """The exact check leaves whole files alone: a variable frame rate's last frame held longer or shorter than
    the average, Matroska's millisecond timestamps, an MP4's own time base."""
    source = tmp_path / name
    if name.endswith("webm"):
        write_encoded(source, codec="libvpx-vp9", frames=24)
    else:
        write_clip(source, frames=24, audio=False, variable_rate=name.startswith("vfr"))
    with caplog.at_level(logging.WARNING):
        upscale_video(source, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions(codec="ffv1"))
    assert warnings_of(caplog) == []
