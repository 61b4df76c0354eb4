"""What a video's refusals and warnings tell the two kinds of caller: `srfeat upscale` its flags, Python
`upscale_video` its keywords; and hints that point somewhere (no empty frame range, no errno of FFmpeg's)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from srfeat.errors import VideoError
from srfeat.inference import Upscaler
from srfeat.video import FrameRange, VideoOptions

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from srfeat.video.pipeline import upscale_video  # noqa: E402 - needs PyAV, checked above
from tests.video_helpers import cli, write_clip, write_encoded  # noqa: E402 - needs PyAV, checked above


def the_error_line(result: subprocess.CompletedProcess[str], source: Path) -> str:
    """A failed run's one error line about `source`, with no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("ERROR:") and str(source) in line]
    return line


def first_frame_broken(folder: Path) -> Path:
    """A 6-frame H.264 clip whose first frame's bytes are overwritten: the decoder refuses it."""
    whole = folder / "whole.mp4"
    write_clip(whole, frames=6, audio=False)
    with av.open(str(whole)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
    broken = bytearray(whole.read_bytes())
    broken[first.pos : first.pos + first.size] = bytes([0, 255]) * (first.size // 2) + bytes(first.size % 2)
    source = folder / "broken.mp4"
    source.write_bytes(bytes(broken))
    return source


def test_a_first_frame_that_does_not_decode_suggests_no_empty_frame_range(tmp_path: Path, model_path: Path) -> None:
    """A video whose first frame does not decode was told "--frames 0:0 upscales the 0 frames before it", a range
    the command refuses (and one that would leave nothing); no range helps there, as frames decode from the start."""
    source = first_frame_broken(tmp_path)
    hint = (
        "(no frame comes before this point, and every frame range is decoded from the file's start: "
        "skip or replace this file)"
    )
    with pytest.raises(VideoError) as refused:
        upscale_video(source, tmp_path / "out" / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions())
    message = str(refused.value)
    assert "cannot be decoded" in message and message.endswith(f"the file is damaged {hint}"), message
    line = the_error_line(cli(source, "-o", tmp_path / "out" / "out.mkv", "--model", model_path), source)
    assert line.endswith(f"the file is damaged {hint}") and "--frames 0:0" not in line, line
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    ("frames", "given"),
    [(FrameRange(30, 40), "frames=FrameRange(30, 40)"), (FrameRange(30), "frames=FrameRange(30)")],
)
def test_a_frame_range_that_starts_past_the_end_from_python_names_the_keyword(
    tmp_path: Path, model_path: Path, frames: FrameRange, given: str
) -> None:
    """From Python it said "--frames 30:40 starts past the last frame", a flag of a command the caller never ran."""
    source = tmp_path / "four.mkv"
    write_clip(source, frames=4, size=(16, 12), audio=False)
    with pytest.raises(VideoError) as refused:
        upscale_video(source, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions(frames=frames))
    assert str(refused.value) == f"{source}: {given} starts past the last frame (the video has 4 frames)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.mkv"]


def test_a_frame_range_that_starts_past_the_end_on_the_command_line_names_the_flag(
    tmp_path: Path, model_path: Path
) -> None:
    source = tmp_path / "four.mkv"
    write_clip(source, frames=4, size=(16, 12), audio=False)
    line = the_error_line(cli(source, "-o", tmp_path / "out.mkv", "--model", model_path, "--frames", "30:"), source)
    assert line.endswith(f"{source}: --frames 30: starts past the last frame (the video has 4 frames)"), line


def test_a_frame_range_that_ends_past_the_end_from_python_names_the_keyword(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "four.mkv"
    write_clip(source, frames=4, size=(16, 12), audio=False)
    options = VideoOptions(codec="ffv1", frames=FrameRange(2, 100))
    with caplog.at_level(logging.WARNING):
        summary = upscale_video(source, tmp_path / "part.mkv", Upscaler(model_path, device="cpu"), options)
    assert summary.frames == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"{source}: frames=FrameRange(2, 100) ends past the last frame (the video has 4 frames); wrote frames 2 to 3"
    ]


def test_frames_the_decoder_patched_up_from_python_name_the_keyword(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning said "--frames can leave them out" to a Python caller too."""
    from tests.test_video import concealed_damage

    whole = tmp_path / "whole.mkv"
    write_clip(whole, frames=6, audio=False)
    damaged = tmp_path / "damaged.mkv"
    corrupt = concealed_damage(whole, damaged)
    with caplog.at_level(logging.WARNING):
        upscale_video(damaged, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions())
    expected = (
        f"{damaged}: {len(corrupt)} of the 6 frames upscaled decoded with errors (a damaged file?), the first at "
        f"frame {corrupt[0]}; they are upscaled as the decoder patched them up (VideoOptions(frames=...) can leave "
        "them out)"
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [expected]


def test_a_y4m_header_of_a_frame_size_ffmpeg_refuses_is_named_not_an_errno(tmp_path: Path, model_path: Path) -> None:
    """FFmpeg refuses these headers as it opens the file, with "Device or resource busy" for a reason."""
    huge, thin, zero = (tmp_path / name for name in ("huge.y4m", "thin.y4m", "zero.y4m"))
    huge.write_bytes(b"YUV4MPEG2 W20000 H20000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(2000))
    thin.write_bytes(b"YUV4MPEG2 W1 H2100000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(2000))  # 2.1 megapixels
    zero.write_bytes(b"YUV4MPEG2 W0 H48 F25:1\nFRAME\n")
    result = cli(huge, thin, zero, "-o", tmp_path / "out", "--model", model_path)
    line = the_error_line(result, huge)  # the limit is twice the images' (PIL's decompression-bomb limit)
    assert f"{huge}: its frames are 20000x20000 pixels, more than " in line, line
    assert line.endswith(" (a damaged or hostile header?); skip or replace this file"), line
    for source, size in ((thin, "1x2100000"), (zero, "0x48")):
        assert the_error_line(result, source).endswith(
            f"{source}: its header says {size} pixels a frame, a size FFmpeg cannot read (a damaged header?); "
            "skip or replace this file"
        )
    assert "busy" not in result.stderr, result.stderr
    with pytest.raises(VideoError, match="its frames are 20000x20000 pixels"):
        upscale_video(huge, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions())
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.mkv").exists()


def test_a_range_with_no_end_is_timed_from_its_first_frame_without_decoding_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--frames 2:` decoded the whole video once to time its start, then again to upscale it."""
    from srfeat.video import range_times
    from srfeat.video.input_frames import InputFrames

    source = tmp_path / "clip.mp4"
    times = write_clip(source, frames=24, audio=False)
    decoded: list[int] = []
    decode_packet = InputFrames._decode_packet

    def counting_decode(self: InputFrames, packet: Any, index: int, *, holds_picture: bool = True) -> list[Any]:
        frames = decode_packet(self, packet, index, holds_picture=holds_picture)
        decoded.extend(frame.pts for frame in frames)
        return frames

    monkeypatch.setattr(InputFrames, "_decode_packet", counting_decode)
    window = range_times.time_window(av, source, FrameRange(2))
    assert window.start == pytest.approx(times[2]) and window.stop is None
    assert len(decoded) == 3  # frames 0, 1 and 2; the 21 after them were decoded too
    window = range_times.time_window(av, source, FrameRange(2, 5))
    assert (window.start, window.stop) == (pytest.approx(times[2]), pytest.approx(times[5]))


def test_a_frame_that_stops_a_range_gets_the_part_of_that_range_before_it(tmp_path: Path, model_path: Path) -> None:
    """`--frames 2:` on frames whose size changes at frame 4 was told "--frames 0:4", frames it had left out;
    a frame that fails before the range's first was told nothing of the kind (the probe's error had no hint)."""
    for name, size in (("a.ts", (64, 48)), ("b.ts", (96, 64))):
        write_encoded(tmp_path / name, size=size)
    spliced = tmp_path / "spliced.ts"  # joined MPEG-TS pieces, as broadcasts splice them: 64x48, then 96x64
    spliced.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    line = the_error_line(cli(spliced, "-o", tmp_path / "out.mkv", "--model", model_path, "--frames", "2:"), spliced)
    assert line.endswith("(--frames 2:4 upscales the 2 frames before it)"), line
    upscaler = Upscaler(model_path, device="cpu")
    with pytest.raises(VideoError, match=r"\(frames=FrameRange\(2, 4\) upscales the 2 frames before it\)$"):
        upscale_video(spliced, tmp_path / "out.mkv", upscaler, VideoOptions(frames=FrameRange(2)))

    broken = first_frame_broken(tmp_path)
    for frames in (FrameRange(2, 5), FrameRange(0, 5)):
        with pytest.raises(VideoError) as refused:
            upscale_video(broken, tmp_path / "out.mkv", upscaler, VideoOptions(frames=frames))
        before = "no frame of the range" if frames.start else "no frame"
        hint = (
            f"({before} comes before this point, and every frame range is decoded from the file's start: "
            "skip or replace this file)"
        )
        assert "cannot be decoded" in str(refused.value) and str(refused.value).endswith(hint), refused.value
    assert not (tmp_path / "out.mkv").exists()


def test_an_output_saved_before_or_while_upscaling_is_refused_naming_the_callers_option(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`upscale_video(replace=False)` said "(--overwrite)" to Python of a file saved while it ran, and "pass
    replace=True" to `srfeat upscale` (`command_line=True`) of one saved after the command looked."""
    from srfeat.files import OutputExistsError
    from srfeat.video import pipeline

    source, target = tmp_path / "in.mkv", tmp_path / "out.mkv"
    write_clip(source, frames=2, audio=False)
    upscaler, options = Upscaler(model_path, device="cpu"), VideoOptions()
    target.write_bytes(b"saved before")
    for command_line, option in ((False, "replace=True"), (True, "--overwrite")):
        with pytest.raises(OutputExistsError) as raised:
            upscale_video(source, target, upscaler, options, replace=False, command_line=command_line)
        assert str(raised.value) == f"{target} exists; it is kept: remove it, or pass {option} to replace it"
    run = pipeline._Transcoder.run

    def saving_meanwhile(self: Any) -> Any:
        target.write_bytes(b"saved meanwhile")
        return run(self)

    monkeypatch.setattr(pipeline._Transcoder, "run", saving_meanwhile)
    said = f"{target} appeared while it was being written (another program?); it is kept: remove it or allow "
    for command_line, option in ((False, "replacing it (replace=True)"), (True, "replacing it (--overwrite)")):
        target.unlink()
        with pytest.raises(OutputExistsError) as raised:
            upscale_video(source, target, upscaler, options, replace=False, command_line=command_line)
        assert str(raised.value) == said + option + ", and run again"
        assert target.read_bytes() == b"saved meanwhile"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv"]  # no temporary left


def test_an_outscale_that_leaves_no_pixel_is_refused_for_a_video(tmp_path: Path, model_path: Path) -> None:
    """--outscale 0.01 made a 64x48 video 1x1 (each side at least 1 pixel) where images are now refused."""
    from srfeat.errors import InvalidImageError

    source = tmp_path / "clip.mp4"
    write_clip(source, frames=2, audio=False)
    refusal = "outscale 0.01 would make this 64x48 video 1x0 pixels, under 1 pixel on a side: give {} 0.0208 or more"
    with pytest.raises(InvalidImageError, match=refusal.format("outscale")):
        upscale_video(source, tmp_path / "api.mkv", Upscaler(model_path, device="cpu"), VideoOptions(outscale=0.01))
    line = the_error_line(cli(source, "-o", tmp_path / "out.mkv", "--outscale", "0.01", "--model", model_path), source)
    assert line.endswith(f"--{refusal.format('--outscale')}"), line
    assert not (tmp_path / "api.mkv").exists() and not (tmp_path / "out.mkv").exists()
