"""`srfeat upscale clip.mp4`: frames, timestamps, audio and subtitles, slices, errors, Ctrl-C."""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from srfeat.cli import main
from srfeat.errors import VideoError
from srfeat.inference import Upscaler
from srfeat.video import FrameRange, VideoOptions, parse_frame_range

av = pytest.importorskip("av")
pytest.importorskip("skimage")

from av.sidedata.sidedata import Type  # noqa: E402 - needs PyAV, checked above

from srfeat.video.encoding import quality_options, repaired_decode_time  # noqa: E402 - needs PyAV, checked above
from srfeat.video.pipeline import upscale_video  # noqa: E402 - needs PyAV, checked above
from tests.video_helpers import (  # noqa: E402 - needs PyAV, checked above
    AUDIO_FRAME,
    AUDIO_RATE,
    audio_samples,
    cli,
    frame_times,
    packets,
    pan_frames,
    read_frames,
    write_captioned,
    write_clip,
    write_encoded,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds, 64x48, 12 frames/s, AAC audio."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_clip(path, frames=24, fps=12)
    return path


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half a second, 64x48, 12 frames/s, AAC audio: where the length is not the point."""
    path = tmp_path_factory.mktemp("clips") / "short.mp4"
    write_clip(path, frames=6, fps=12)
    return path


def upscale(*args: str | Path) -> int:
    return main(["upscale", *map(str, args)])


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def test_two_second_clip_with_audio_comes_back_4x(tmp_path: Path, clip: Path, model_path: Path) -> None:
    result = cli(clip, "-o", tmp_path / "out", "--model", model_path, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    output = tmp_path / "out" / "clip.mp4"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4"]
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (256, 192)
        assert video.codec_context.name == "h264" and video.average_rate == 12
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac" and audio.sample_rate == AUDIO_RATE
    assert frame_times(output) == pytest.approx(frame_times(clip), abs=1e-3) and len(frame_times(output)) == 24
    # Audio copied untouched: the same packets at the same times, so the same two seconds of sound.
    assert packets(output, "audio") == packets(clip, "audio")
    assert audio_samples(output) == audio_samples(clip) == pytest.approx(2 * AUDIO_RATE, abs=AUDIO_FRAME)


def test_frames_are_the_upscalers_within_the_codecs_error(tmp_path: Path, short_clip: Path, model_path: Path) -> None:
    clip = short_clip
    upscaler = Upscaler(model_path, device="cpu")
    expected = [upscaler(frame) for frame in read_frames(clip)]
    # Lossless H.264 in RGB: exactly what Upscaler makes of each decoded input frame.
    assert (
        upscale(clip, "-o", tmp_path / "lossless.mp4", "--model", model_path, "--codec", "libx264rgb", "--crf", "0")
        == 0
    )
    lossless = read_frames(tmp_path / "lossless.mp4")
    assert len(lossless) == len(expected)
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(lossless, expected, strict=True)) == 0
    # The default (H.264, 4:2:0, CRF 18): the codec's error, measured on this noisy tiny model at 38.5 dB.
    assert upscale(clip, "-o", tmp_path / "default.mp4", "--model", model_path) == 0
    default = read_frames(tmp_path / "default.mp4")
    assert min(psnr(a, b) for a, b in zip(default, expected, strict=True)) > 35


def test_variable_frame_rate_and_subtitles_kept_in_matroska(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "vfr.mkv"
    times = write_clip(source, frames=12, fps=12, variable_rate=True, subtitles=("one", "two"))
    assert len(set(np.round(np.diff(times), 3))) == 3  # really variable
    assert upscale(source, "-o", tmp_path / "out", "--model", model_path, "--outscale", "2") == 0
    output = tmp_path / "out" / "vfr.mkv"
    assert frame_times(output) == pytest.approx(times, abs=1e-3)
    assert [payload for _, payload in packets(output, "subtitle")] == [b"one", b"two"]
    assert packets(output, "subtitle") == packets(source, "subtitle")
    assert packets(output, "audio") == packets(source, "audio")
    assert read_frames(output)[0].shape == (96, 128, 3)


def test_a_portrait_phone_video_stays_upright(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "portrait.mov"
    write_clip(source, frames=2, size=(32, 24), audio=False, rotation=90)
    assert upscale(source, "-o", tmp_path / "out", "--model", model_path) == 0
    with av.open(str(tmp_path / "out" / "portrait.mov")) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 90 and (frame.width, frame.height) == (128, 96)


def display_matrix_of(path: Path) -> list[int] | None:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        entry = frame.side_data.get(Type.DISPLAYMATRIX)
        return None if entry is None else np.frombuffer(bytes(entry), dtype=np.int32).tolist()


def test_a_mirrored_selfie_video_stays_mirrored(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "selfie.mp4"
    write_clip(source, frames=2, size=(32, 24), audio=False, rotation=90, mirrored=True)
    assert upscale(source, "-o", tmp_path / "out", "--model", model_path) == 0
    matrix = display_matrix_of(tmp_path / "out" / "selfie.mp4")
    assert matrix == display_matrix_of(source) and matrix is not None
    assert matrix[0] * matrix[4] - matrix[1] * matrix[3] < 0  # a mirror: the determinant is negative


def test_a_display_matrix_no_player_can_show_is_dropped_with_a_warning(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "flat.mp4"
    write_clip(source, frames=2, size=(32, 24), audio=False, display_matrix=[0] * 9)
    with caplog.at_level(logging.WARNING):
        assert upscale(source, "-o", tmp_path / "out", "--model", model_path) == 0
    assert "flat.mp4: its display matrix maps the picture onto a line" in caplog.text
    assert display_matrix_of(tmp_path / "out" / "flat.mp4") is None  # not a turn of -127 degrees


def test_frames_slice_cuts_video_audio_and_subtitles(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "long.mkv"
    write_clip(source, frames=36, fps=12, subtitles=("zero", "one", "two"))
    output = tmp_path / "slice.mkv"
    status = upscale(source, "-o", output, "--model", model_path, "--frames", "12:24", "--codec", "ffv1")
    assert status == 0
    frames = read_frames(output)
    assert len(frames) == 12
    assert frame_times(output) == pytest.approx([i / 12 for i in range(12)], abs=1e-3)
    upscaler = Upscaler(model_path, device="cpu")
    assert np.array_equal(frames[0], upscaler(read_frames(source)[12]))  # ffv1 in RGB is lossless
    # The audio packets of seconds 1 to 2, moved to start at 0; the subtitle shown at 1 s, now at 0.
    audio = packets(output, "audio")
    kept = [(t - 1.0, p) for t, p in packets(source, "audio") if 1.0 <= t < 2.0]
    assert [p for _, p in audio] == [p for _, p in kept]
    assert [t for t, _ in audio] == pytest.approx([t for t, _ in kept], abs=1e-3)
    assert packets(output, "subtitle") == [(0.0, b"one")]


def test_folders_mix_videos_and_images_and_overwrite_is_asked_for(
    tmp_path: Path, clip: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_clip(folder / "short.mov", frames=3, audio=False)
    from PIL import Image

    Image.fromarray(read_frames(clip)[0]).save(folder / "still.png")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="srfeat"):
        assert upscale(folder, "-o", out, "--model", model_path, "--suffix", "_x4") == 0
    assert any(record.getMessage().startswith("1 image(s) and 1 video(s) with") for record in caplog.records)
    assert sorted(p.name for p in out.iterdir()) == ["short_x4.mov", "still_x4.png"]
    assert read_frames(out / "short_x4.mov")[0].shape == (192, 256, 3)
    before = (out / "short_x4.mov").stat().st_mtime_ns
    assert upscale(folder / "short.mov", "-o", out, "--model", model_path, "--suffix", "_x4") == 1
    assert (out / "short_x4.mov").stat().st_mtime_ns == before
    assert upscale(folder / "short.mov", "-o", out, "--model", model_path, "--suffix", "_x4", "--overwrite") == 0
    assert (out / "short_x4.mov").stat().st_mtime_ns != before


def test_bad_videos_get_one_line_each_and_leave_nothing(
    tmp_path: Path, clip: Path, short_clip: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "text.mp4").write_text("not a video")
    write_clip(tmp_path / "sound.mp4", video=False)
    broken = bytearray(clip.read_bytes())
    with av.open(str(clip)) as container:
        tenth = [p for p in container.demux(video=0) if p.size][10]
    broken[tenth.pos : tenth.pos + tenth.size] = bytes([0, 255]) * (tenth.size // 2) + bytes(tenth.size % 2)
    (tmp_path / "broken.mp4").write_bytes(bytes(broken))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        inputs = [tmp_path / name for name in ("text.mp4", "sound.mp4", "broken.mp4")]
        status = upscale(*inputs, short_clip, "-o", out, "--model", model_path)
    assert status == 1
    errors = error_lines(caplog)
    expectations = {"text.mp4": "cannot read video", "sound.mp4": "no video stream", "broken.mp4": "cannot be decoded"}
    for name, reason in expectations.items():
        lines = [line for line in errors if name in line]
        assert len(lines) == 1 and reason in lines[0] and "\n" not in lines[0], errors
    # Where: the damaged packet's own time. Decoder threads report the damage a few packets after it was sent, and
    # that later packet's time was named ("near 0.92 s" for a frame at 0.83 s).
    at = re.search(r"a frame at ([0-9.]+) s", next(line for line in errors if "broken.mp4" in line))
    assert at is not None and at.group(1) == f"{float(tenth.pts * tenth.time_base):.2f}"
    assert sorted(p.name for p in out.iterdir()) == ["short.mp4"]  # no partial or temporary files


def concealed_damage(whole: Path, damaged: Path) -> list[int]:
    """Write `whole` with the second part of one packet garbled such that the decoder conceals the damage
    (it raises for some garbles, not for these); the frames it flags as corrupt."""
    with av.open(str(whole)) as container:
        video = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    for (position, size), fraction in itertools.product(video[1:], (0.3, 0.6)):
        data = bytearray(whole.read_bytes())
        for offset in range(position + int(size * fraction), position + size - 1):
            data[offset] ^= 0x55
        damaged.write_bytes(bytes(data))
        try:
            with av.open(str(damaged)) as container:
                corrupt = [i for i, frame in enumerate(container.decode(video=0)) if frame.is_corrupt]
        except av.error.FFmpegError:
            continue
        if corrupt:
            return corrupt
    raise AssertionError("no garble the decoder conceals")


def test_frames_the_decoder_patched_up_are_told(tmp_path: Path, model_path: Path) -> None:
    """A garbled frame the decoder conceals (with guessed blocks) raises no error: it was upscaled unsaid."""
    whole = tmp_path / "whole.mkv"
    write_clip(whole, frames=6, audio=False)
    damaged = tmp_path / "damaged.mkv"
    corrupt = concealed_damage(whole, damaged)
    result = cli(damaged, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 0, result.stderr
    expected = (
        f"WARNING: {damaged}: {len(corrupt)} of the 6 frames upscaled decoded with errors (a damaged file?), the "
        f"first at frame {corrupt[0]}; they are upscaled as the decoder patched them up (--frames can leave them out)"
    )
    assert stderr_lines(result, "WARNING") == [expected], result.stderr
    result = cli(whole, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 0 and not stderr_lines(result, "WARNING"), result.stderr


def test_a_truncated_video_is_reported(tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = tmp_path / "whole.mkv"
    write_clip(whole, frames=24, audio=False)
    with av.open(str(whole)) as container:
        cut = [p for p in container.demux(video=0) if p.size][12].pos
    (tmp_path / "cut.mkv").write_bytes(whole.read_bytes()[:cut])
    with caplog.at_level(logging.WARNING):
        assert upscale(tmp_path / "cut.mkv", "-o", tmp_path / "out", "--model", model_path) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cut.mkv" in w and "truncated" in w and "2.00 s" in w for w in warnings), warnings
    assert 0 < len(read_frames(tmp_path / "out" / "cut.mkv")) < 24


def test_a_y4m_cut_inside_its_last_frame_says_that_frame_was_dropped(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """FFmpeg's y4m reader ends without an error at a frame cut short, and the file states only its whole
    frames: the frame was lost without a word."""
    whole = tmp_path / "whole.y4m"
    write_encoded(whole, codec="rawvideo", container_format="yuv4mpegpipe", frames=4, size=(16, 12))
    frame = 16 * 12 * 3 // 2 + len(b"FRAME\n")
    data = whole.read_bytes()
    (tmp_path / "cut.y4m").write_bytes(data[:-10])
    (tmp_path / "even.y4m").write_bytes(data[:-frame])  # cut between frames: nothing lost of the 3 left
    runs = [("whole.y4m", (), 4), ("cut.y4m", (), 3), ("even.y4m", (), 3), ("cut.y4m", ("--frames", "0:3"), 3)]
    warned = []
    for index, (name, options, frames) in enumerate(runs):
        caplog.clear()
        output = tmp_path / f"out{index}.mkv"
        with caplog.at_level(logging.WARNING):
            assert upscale(tmp_path / name, "-o", output, "--model", model_path, *options) == 0
        warned.append([r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING])
        assert len(read_frames(output)) == frames, name
    cut = (
        f"{tmp_path / 'cut.y4m'}: the file ends {frame - 10} bytes into a frame (truncated?); that incomplete "
        "last frame was dropped, the video has 3 whole frames"
    )
    assert warned == [[], [cut], [], []]  # the last: the range ends before the frame cut short


def test_an_mp4_trimmed_without_reencoding_is_not_called_truncated(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cut between keyframes (`ffmpeg -ss 1 -c copy`, phone and editor trims) keeps the frames from the
    keyframe before it, which the MP4's edit list hides: the file lists 12 frames and shows 7, all there."""
    whole = tmp_path / "whole.mp4"
    write_clip(whole, frames=12, size=(16, 12), audio=False)
    trimmed = tmp_path / "trimmed.mp4"
    with av.open(str(whole)) as source, av.open(str(trimmed), "w") as output:
        stream = output.add_stream_from_template(source.streams.video[0])
        shift = 5 * round(1 / (12 * source.streams.video[0].time_base))  # 5 frames before the cut
        for packet in source.demux(video=0):
            if packet.dts is not None:
                packet.pts, packet.dts, packet.stream = packet.pts - shift, packet.dts - shift, stream
                output.mux(packet)
    assert len(read_frames(trimmed)) == 7
    with caplog.at_level(logging.WARNING):
        assert upscale(trimmed, "-o", tmp_path / "out", "--model", model_path) == 0
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(read_frames(tmp_path / "out" / "trimmed.mp4")) == 7


def test_ctrl_c_leaves_no_partial_output(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "long.mp4"
    write_clip(source, frames=240, audio=False)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # FFV1 writes each frame as it comes (x264 holds dozens back), so the temporary file is there at once.
    upscale_args = [str(source), "-o", str(out / "long.mkv"), "--model", str(model_path), "--codec", "ffv1"]
    command = [sys.executable, "-m", "srfeat.cli", "upscale", *upscale_args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(1.0)  # frames are being upscaled and written to the temporary file
    assert process.poll() is None, "finished before it could be interrupted; make the clip longer"
    assert [p.name.startswith(".long.mkv.") for p in out.iterdir()] == [True]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert not out.exists()  # no partial output, nor the folder the run made for it


def test_a_file_named_like_an_ffmpeg_protocol_is_read_as_the_file(
    tmp_path: Path, short_clip: Path, model_path: Path
) -> None:
    """FFmpeg reads `pipe:0.mp4` as the pipe protocol (stdin) and `subfile:x.mp4` as another; given as
    the working directory's file (`srfeat upscale *.mp4`), the file was never read."""
    for name in ("pipe:0.mp4", "subfile:x.mp4"):
        (tmp_path / name).write_bytes(short_clip.read_bytes())
    command = [sys.executable, "-m", "srfeat.cli", "upscale", "pipe:0.mp4", "subfile:x.mp4", "-o", "out"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [*command, "--model", str(model_path)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("pipe:0.mp4", "subfile:x.mp4"):
        assert len(read_frames(tmp_path / "out" / name)) == 6


def test_missing_pyav_names_the_extra(tmp_path: Path, clip: Path, model_path: Path) -> None:
    code = (
        "import sys; sys.modules['av'] = None; from srfeat.cli import main; "
        f"sys.exit(main(['upscale', {str(clip)!r}, '-o', {str(tmp_path / 'out')!r}, '--model', {str(model_path)!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR") and "clip.mp4" in line]
    assert len(errors) == 1 and 'pip install -e ".[video]" in srfeat\'s folder' in errors[0], result.stderr


def test_output_names_and_options_are_checked(
    tmp_path: Path, clip: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert upscale(clip, "-o", tmp_path / "frame.png", "--model", model_path) == 1
        assert upscale(clip, "-o", tmp_path / "a.mp4", "--model", model_path, "--codec", "mpeg4", "--crf", "20") == 1
        assert upscale(clip, "-o", tmp_path / "b.mp4", "--model", model_path, "--codec", "nonesuch") == 1
        assert upscale(clip, "-o", tmp_path / "c.mp4", "--model", model_path, "--frames", "30:40") == 1
    errors = error_lines(caplog)
    assert any("cannot be written as frame.png" in e for e in errors), errors
    assert any("--crf works with" in e for e in errors), errors
    assert any("--codec nonesuch" in e for e in errors), errors
    assert any("starts past the last frame" in e and "24 frames" in e for e in errors), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_frame_range_parsing() -> None:
    assert parse_frame_range("0:48") == FrameRange(0, 48)
    assert parse_frame_range("100:") == FrameRange(100, None)
    assert parse_frame_range(":250") == FrameRange(0, 250)
    for bad in ("48", "5:5", "-1:3", "a:b"):
        with pytest.raises(Exception, match="A"):
            parse_frame_range(bad)


def test_video_benchmark_runs_and_checks_what_comes_back(model_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks import video as video_benchmark

    result = video_benchmark.main(
        ["--size", "16x12", "--seconds", "0.25", "--model", str(model_path), "--device", "cpu", "--no-json"]
    )
    (row,) = result["sizes"]
    assert row["output"] == "64x48" and row["frames_in"] == row["frames_out"] == 3
    assert row["fps_in"] == row["fps_out"] == 12 and row["audio_samples_in"] == row["audio_samples_out"]
    assert row["lossless_max_diff"] == 0 and row["pipeline_fps"] > 0


def test_strength_reaches_every_frame(tmp_path: Path) -> None:
    """`srfeat upscale clip --strength 0.5`: every frame is the default/gan blend's, as the API gives it."""
    source = tmp_path / "small.mp4"
    write_clip(source, frames=3, size=(16, 12), audio=False)
    result = cli(source, "-o", tmp_path / "dial.mkv", "--strength", "0.5", "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    dial = Upscaler("default", strength=0.5, device="cpu")
    faithful = Upscaler("default", device="cpu")
    output_frames = read_frames(tmp_path / "dial.mkv")
    assert len(output_frames) == 3
    for frame, source_frame in zip(output_frames, read_frames(source), strict=True):
        assert np.array_equal(frame, dial(source_frame))  # ffv1 in RGB is lossless
        assert not np.array_equal(frame, faithful(source_frame))


# -- hostile and careless input: each is one line (or one warning), and nothing is lost -------------


def stderr_lines(result: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(f"{level}:")]


def test_an_output_folder_that_is_a_file_is_one_line_before_the_model_loads(tmp_path: Path, short_clip: Path) -> None:
    (tmp_path / "afile").write_text("mine")
    target = tmp_path / "afile" / "x.mp4"
    # The model does not exist: an error about the output alone shows it was found before loading it.
    result = cli(short_clip, "-o", target, "--model", tmp_path / "missing.safetensors")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    reason = f"{tmp_path / 'afile'} is a file, not a folder; give another -o"
    assert stderr_lines(result, "ERROR") == [f"ERROR: -o {target}: {reason}"]
    assert (tmp_path / "afile").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_inputs_without_a_film_are_one_line_each_before_the_model_loads(tmp_path: Path) -> None:
    """An audio-only MP4 or a Matroska file of subtitles alone was found only after the model loaded."""
    write_clip(tmp_path / "sound.mp4", frames=3, video=False)
    write_clip(tmp_path / "lines.mkv", frames=3, video=False, audio=False, subtitles=("one",))
    (tmp_path / "text.mp4").write_text("not a video")
    inputs = [tmp_path / name for name in ("sound.mp4", "lines.mkv", "text.mp4")]
    # The model does not exist: errors about the inputs alone show they were found before loading it.
    result = cli(*inputs, "-o", tmp_path / "out", "--model", tmp_path / "missing.safetensors")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert stderr_lines(result, "ERROR") == [
        f"ERROR: {inputs[0]} has no video stream (audio only?); nothing to upscale",
        f"ERROR: {inputs[1]} has no video stream (audio only?); nothing to upscale",
        f"ERROR: cannot read video {inputs[2]}: Invalid data found when processing input; skip or replace this file",
        "ERROR: nothing to upscale: every input has a problem above",
    ]
    assert not (tmp_path / "out").exists()


def test_a_folder_at_the_outputs_name_is_refused_before_the_model_loads(tmp_path: Path, short_clip: Path) -> None:
    """--overwrite onto a folder named like the output failed at the final rename, after the whole upscale."""
    from PIL import Image

    Image.fromarray(pan_frames(1)[0]).save(tmp_path / "still.png")
    out = tmp_path / "out"
    for name in ("short.mp4", "still.png"):
        (out / name).mkdir(parents=True)
        (out / name / "mine.txt").write_text("mine")
    for overwrite in ((), ("--overwrite",)):
        result = cli(
            short_clip, tmp_path / "still.png", "-o", out, "--model", tmp_path / "missing.safetensors", *overwrite
        )
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert stderr_lines(result, "ERROR") == [
            f"ERROR: {short_clip}: its output {out / 'short.mp4'} is a folder; it is kept: give another -o or --suffix",
            f"ERROR: {tmp_path / 'still.png'}: its output {out / 'still.png'} is a folder; it is kept: "
            + "give another -o or --suffix",
            "ERROR: nothing to upscale: every input has a problem above",
        ]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "short.mp4",
        "short.mp4/mine.txt",
        "still.png",
        "still.png/mine.txt",
    ]


def test_matroska_output_gets_no_mp4_brand_tags(tmp_path: Path, short_clip: Path, model_path: Path) -> None:
    """An MP4's major_brand, minor_version and compatible_brands were written into a .mkv as its tags."""
    with av.open(str(short_clip)) as container:
        assert "major_brand" in container.metadata  # what the input holds
    assert upscale(short_clip, "-o", tmp_path / "x.mkv", "--model", model_path) == 0
    with av.open(str(tmp_path / "x.mkv")) as container:
        tags = {key.upper() for key in container.metadata}
    assert not tags & {"MAJOR_BRAND", "MINOR_VERSION", "COMPATIBLE_BRANDS"}, tags
    assert upscale(short_clip, "-o", tmp_path / "x.mov", "--model", model_path) == 0
    with av.open(str(tmp_path / "x.mov")) as container:
        assert "major_brand" in container.metadata  # MOV's muxer writes its own


def test_errors_writing_the_output_are_one_line_and_leave_no_temporary(
    tmp_path: Path, short_clip: Path, model_path: Path
) -> None:
    """From Python (or when the folder changes after the check): the pipeline's own OSErrors; a file where the
    output's folder goes is named by the folder maker (it was "File exists")."""
    from srfeat.files import NotAFolderError

    upscaler = Upscaler(model_path, device="cpu")
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(NotAFolderError, match=r"cannot write .*x\.mp4: .*afile is a file, not a folder; give a path"):
        upscale_video(short_clip, tmp_path / "afile" / "x.mp4", upscaler, VideoOptions())
    with pytest.raises(VideoError, match=r"cannot write .*folder\.mp4 .*a folder of that name exists"):
        upscale_video(short_clip, tmp_path / "folder.mp4", upscaler, VideoOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.mp4"]
    assert list((tmp_path / "folder.mp4").iterdir()) == []


def test_from_python_paths_may_be_str_and_an_existing_output_is_refused_before_any_decoding(
    tmp_path: Path, short_clip: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`upscale_video("clip.mp4", ...)` was AttributeError ('str' object has no attribute 'suffix'). With
    replace=False an existing output was found only after every frame was upscaled, and said to have
    "appeared while it was being written (another program?)", with the command line's --overwrite."""
    from srfeat.files import OutputExistsError
    from srfeat.video import pipeline

    upscaler = Upscaler(model_path, device="cpu")
    target = tmp_path / "out.mp4"
    summary = upscale_video(str(short_clip), str(target), upscaler, VideoOptions(frames=FrameRange(0, 2)))
    assert summary.frames == 2
    original = target.read_bytes()
    monkeypatch.setattr(pipeline, "import_av", lambda source: pytest.fail("the video was opened"))
    with pytest.raises(OutputExistsError, match=r"out\.mp4 exists; it is kept: .*pass replace=True"):
        upscale_video(short_clip, target, upscaler, VideoOptions(), replace=False)
    assert target.read_bytes() == original and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize(("start", "stop"), [(2, 1), (3, 3), (-3, None), (0.5, 4), (0, True)])
def test_a_frame_range_built_in_python_is_checked_as_the_command_line_checks_it(start: object, stop: object) -> None:
    """`FrameRange(2, 1)` was taken, and the clip was then said to have 2 frames ("starts past the
    last frame"), whatever its length."""
    from srfeat.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match=r"FrameRange\(.*\): need whole numbers 0 <= start < stop"):
        FrameRange(start, stop)  # pyright: ignore[reportArgumentType]


def test_an_upscaler_or_options_of_another_kind_are_one_line(
    tmp_path: Path, short_clip: Path, model_path: Path
) -> None:
    """They were AttributeErrors ('str' object has no attribute 'scale', 'NoneType' ... 'frames')."""
    from srfeat.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match=r"upscaler must be an srfeat.Upscaler .*got 'default'"):
        upscale_video(short_clip, tmp_path / "out.mp4", "default", VideoOptions())  # pyright: ignore[reportArgumentType]
    with pytest.raises(InvalidOptionError, match="options must be an srfeat.video.VideoOptions, got None"):
        upscale_video(short_clip, tmp_path / "out.mp4", Upscaler(model_path, device="cpu"), None)  # pyright: ignore[reportArgumentType]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crf": "20"}, "crf must be a number or None, got str '20'"),
        ({"codec": None}, "codec must be an encoder name"),
        ({"frames": (0, 48)}, r"frames must be a FrameRange \(e.g. FrameRange\(0, 48\)\), got tuple \(0, 48\)"),
    ],
)
def test_video_options_of_the_wrong_kind_are_one_line_when_made(options: dict, message: str) -> None:
    """A crf of "20" was a TypeError from inside the encoder set-up, frames of (0, 48) an AttributeError
    once the video was open."""
    from srfeat.errors import InvalidOptionError

    with pytest.raises(InvalidOptionError, match=message):
        VideoOptions(**options)
    # numpy's floats are accepted as Python's are, though the annotation says float.
    assert VideoOptions(crf=np.float32(20)).crf == 20  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("outscale", [float("nan"), float("inf"), 17, "2", True])
def test_an_outscale_built_in_python_is_checked_as_the_command_line_checks_it(outscale: object) -> None:
    """VideoOptions(outscale=nan) was taken, and the video then failed with "cannot convert float NaN to
    integer" (a ValueError from inside, after the video opened); "2" a TypeError."""
    from srfeat.errors import SRFeatError

    with pytest.raises(SRFeatError, match="outscale must be a number"):
        VideoOptions(outscale=outscale)  # pyright: ignore[reportArgumentType]
    assert VideoOptions(outscale=2).outscale == 2


def test_crf_out_of_the_codecs_range_is_refused_before_the_model_loads(
    tmp_path: Path, short_clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "missing.safetensors"  # never looked for: the options fail first
    result = cli(short_clip, "-o", tmp_path / "x264.mp4", "--model", missing, "--crf", "100")  # x264 would clamp to 51
    assert result.returncode == 1
    assert stderr_lines(result, "ERROR") == [
        f"ERROR: {short_clip}: --crf 100: libx264 takes a number from 0 to 51 (lower is better quality)"
    ]
    result = cli(short_clip, "-o", tmp_path / "vp9.webm", "--model", missing, "--crf", "64")
    assert result.returncode == 1
    assert stderr_lines(result, "ERROR") == [
        f"ERROR: {short_clip}: --crf 64: libvpx-vp9 takes a whole number from 0 to 63 (lower is better quality)"
    ]
    cases = {
        "nan": ("x264.mp4", "libx264", "number from 0 to 51"),
        "inf": ("x264.mp4", "libx264", "number from 0 to 51"),
        "-1": ("x264.mp4", "libx264", "number from 0 to 51"),
        "20.5": ("vp9.webm", "libvpx-vp9", "whole number from 0 to 63"),  # FFmpeg would round it unsaid
    }
    for crf, (name, codec, scale) in cases.items():
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert upscale(short_clip, "-o", tmp_path / name, "--model", missing, f"--crf={crf}") == 1
        (line,) = error_lines(caplog)
        assert f"--crf {crf}: {codec} takes a {scale}" in line, line
    with caplog.at_level(logging.ERROR):
        caplog.clear()
        assert (
            upscale(short_clip, "-o", tmp_path / "x265.mkv", "--model", missing, "--codec", "libx265", "--crf", "52")
            == 1
        )
    assert "--crf 52: libx265 takes a number from 0 to 51" in error_lines(caplog)[0]
    assert [p.name for p in tmp_path.iterdir()] == []
    # The ends of each scale are taken.
    assert quality_options("libx264", 51) == {"crf": "51"} and quality_options("libx265", 0)["crf"] == "0"
    assert quality_options("libvpx-vp9", 63) == {"crf": "63", "b": "0"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"crf": float("nan")}, "crf must be a number from 0 to 51 for libx264 (lower is better quality), got nan"),
        ({"crf": 100}, "crf must be a number from 0 to 51 for libx264 (lower is better quality), got 100"),
        ({"crf": 20, "codec": "ffv1"}, "crf works with libx264, "),
    ],
)
def test_a_crf_from_python_is_refused_by_its_keyword(
    options: dict, message: str, tmp_path: Path, short_clip: Path, model_path: Path
) -> None:
    """VideoOptions(crf=nan) was refused as "--crf nan: ...", a flag of a command the caller never ran."""
    with pytest.raises(VideoError) as refused:
        upscale_video(short_clip, tmp_path / "out.mkv", Upscaler(model_path, device="cpu"), VideoOptions(**options))
    assert message in str(refused.value) and "--crf" not in str(refused.value), refused.value
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("codec", "target", "python", "command_line"),
    [
        (
            "nonesuch",
            "out.mkv",
            "codec=nonesuch: this FFmpeg has no such video encoder",
            "--codec nonesuch: this FFmpeg",
        ),
        ("aac", "out.mkv", "codec=aac is not a video encoder", "--codec aac is not a video encoder"),
        (
            "libx264",
            "out.webm",
            "cannot go in a webm file; choose another codec or target extension",
            "another --codec or -o",
        ),
    ],
)
def test_a_codec_from_python_is_refused_by_its_keyword(
    codec: str, target: str, python: str, command_line: str, tmp_path: Path, short_clip: Path, model_path: Path
) -> None:
    """VideoOptions(codec="nonesuch") was refused as "--codec nonesuch: ...", a flag of a command the caller never
    ran; the command line's message is as it was."""
    with pytest.raises(VideoError) as refused:
        upscale_video(short_clip, tmp_path / target, Upscaler(model_path, device="cpu"), VideoOptions(codec=codec))
    assert python in str(refused.value) and "--codec" not in str(refused.value), refused.value
    assert list(tmp_path.iterdir()) == []
    result = cli(short_clip, "-o", tmp_path / target, "--model", model_path, "--codec", codec)
    assert result.returncode == 1 and command_line in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_crf_0_is_lossless_or_refused(tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """x265's CRF 0 alone was lossy (8 grey levels off); SVT-AV1's 0 is FFmpeg's "not set", which
    encoded below its default quality, where the README promised lossless."""
    source = tmp_path / "noise.mkv"
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_encoded(source, codec="ffv1", pixel_format="yuv444p", frames=2, size=(16, 16), still=noise)
    exact = tmp_path / "ffv1.mkv"
    assert upscale(source, "-o", exact, "--model", model_path, "--codec", "ffv1") == 0
    for codec in ("libx265", "libvpx-vp9"):
        output = tmp_path / f"{codec}.mkv"
        assert upscale(source, "-o", output, "--model", model_path, "--codec", codec, "--crf", "0") == 0
        for frame, reference in zip(read_frames(output), read_frames(exact), strict=True):
            assert np.array_equal(frame, reference), codec
    if "libsvtav1" in av.codecs_available:
        with caplog.at_level(logging.ERROR):
            arguments = ("-o", tmp_path / "av1.mkv", "--model", model_path, "--codec", "libsvtav1", "--crf", "0")
            assert upscale(source, *arguments) == 1
        assert f"{source}: --crf 0: libsvtav1 takes a whole number from 1 to 63 (lower is better quality)" in (
            error_lines(caplog)
        )


def test_an_encoders_impossible_decode_times_are_set_in_order() -> None:
    # libx265 on a clip of one or two frames: -2**38 - 64, as observed; MP4 refused the packet.
    assert repaired_decode_time(0, -(2**38) - 64, None, 1) == 0
    assert repaired_decode_time(1, -(2**38) - 64, 0, 1) == 1
    assert repaired_decode_time(5, 6, 3, 1) == 4  # after its own presentation: impossible too
    # What encoders really do is kept: B-frame reordering starts decode times before 0.
    assert [repaired_decode_time(pts, dts, None, 1) for pts, dts in [(0, -2), (3, -1), (2, 0), (1, 1)]] == [
        -2,
        -1,
        0,
        1,
    ]
    assert repaired_decode_time(None, None, 4, 1) is None


@pytest.mark.parametrize("frames", [1, 2])
def test_a_clip_of_one_or_two_frames_encodes_quietly_with_x265(tmp_path: Path, model_path: Path, frames: int) -> None:
    """libx265 wrote about 25 lines of its settings on stderr, and MP4 refused (now and then, its
    memory was uninitialised) the decode times it gave so short a clip."""
    source = tmp_path / "short.mp4"
    write_clip(source, frames=frames, size=(32, 24), audio=False)
    for attempt in range(3):
        output = tmp_path / f"x265_{attempt}.mp4"
        result = cli(source, "-o", output, "--model", model_path, "--codec", "libx265")
        assert result.returncode == 0, result.stderr
        assert [line for line in result.stderr.splitlines() if not line.startswith("INFO:")] == [], result.stderr
        assert len(read_frames(output)) == frames


def test_video_options_with_only_images_get_a_warning(tmp_path: Path, model_path: Path) -> None:
    from PIL import Image

    Image.fromarray(pan_frames(1, 16, 12)[0]).save(tmp_path / "still.png")
    options = ("--codec", "garbage", "--crf", "nan", "--frames", "5:9")
    result = cli(tmp_path / "still.png", "-o", tmp_path / "big.png", "--model", model_path, *options)
    assert result.returncode == 0, result.stderr
    (warning,) = stderr_lines(result, "WARNING")
    assert warning.startswith("WARNING: --codec, --crf, --frames only apply to videos and no input is a video: ignored")
    assert Image.open(tmp_path / "big.png").size == (64, 48)
    result = cli(tmp_path / "still.png", "-o", tmp_path / "again.png", "--model", model_path, "--crf", "20")
    (warning,) = stderr_lines(result, "WARNING")
    assert warning.startswith("WARNING: --crf only applies to videos"), warning


def test_ext_with_videos_gets_a_warning_that_they_keep_their_container(
    tmp_path: Path, short_clip: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`--ext png` reads as "frames as PNGs"; the video is written as .mp4, which is said, not left to surprise."""
    with caplog.at_level(logging.WARNING):
        assert upscale(short_clip, "-o", tmp_path / "out", "--model", model_path, "--ext", "png") == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["short.mp4"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = (
        "--ext png applies to images: a video keeps its container (.mp4, .m4v, .mov, .mkv, .webm; others become "
        ".mkv), or -o NAME.ext names it"
    )
    assert warnings == [expected], warnings


def test_an_image_named_like_a_video_is_refused(tmp_path: Path, model_path: Path) -> None:
    """FFmpeg opens a PNG named .mp4 as a one-frame video: refused (renamed, it goes the image path)."""
    from PIL import Image

    still = Image.fromarray(pan_frames(1, 16, 12)[0])
    still.save(tmp_path / "png.mp4", format="PNG")
    still.save(tmp_path / "jpeg.mkv", format="JPEG")
    result = cli(tmp_path / "png.mp4", tmp_path / "jpeg.mkv", "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 1
    errors = stderr_lines(result, "ERROR")
    for name, kind in (("png.mp4", "PNG"), ("jpeg.mkv", "JPEG")):
        (line,) = [e for e in errors if name in e]
        assert f"{tmp_path / name} is an image ({kind}), not a video; rename it" in line, line
    assert not (tmp_path / "out").exists()


def test_an_image_given_to_upscale_video_by_its_own_name_is_sent_the_image_way(
    tmp_path: Path, model_path: Path
) -> None:
    """`upscale_video("photo.png", ...)` said to rename photo.png with its image extension, which it has."""
    from PIL import Image

    Image.fromarray(pan_frames(1, 16, 12)[0]).save(tmp_path / "photo.png")
    upscaler = Upscaler(model_path, device="cpu")
    with pytest.raises(
        VideoError, match=r"photo.png is an image \(PNG\), not a video: upscale it as an image"
    ) as raised:
        upscale_video(tmp_path / "photo.png", tmp_path / "out.mp4", upscaler, VideoOptions())
    assert "rename" not in str(raised.value)
    assert [path.name for path in tmp_path.iterdir()] == ["photo.png"]


def test_a_still_gif_named_like_a_video_is_refused_and_an_animated_one_upscaled(
    tmp_path: Path, model_path: Path
) -> None:
    """FFmpeg reads a GIF with its own demuxer, not an image pipe's: a one-frame GIF named .mp4 came back as
    a one-frame lossy video. An animated one is a film, and is upscaled as one."""
    from PIL import Image

    first, second = (Image.fromarray(frame) for frame in pan_frames(2, 16, 12))
    first.save(tmp_path / "still.mp4", format="GIF")
    first.save(tmp_path / "animated.mp4", format="GIF", save_all=True, append_images=[second], duration=100)
    result = cli(tmp_path / "still.mp4", tmp_path / "animated.mp4", "-o", tmp_path / "out", "--model", model_path)
    (line,) = [line for line in stderr_lines(result, "ERROR") if "still.mp4" in line]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{tmp_path / 'still.mp4'} is an image (GIF), not a video; rename it" in line, line
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["animated.mp4"]
    assert len(read_frames(tmp_path / "out" / "animated.mp4")) == 2


def test_a_frame_range_past_the_end_is_told(tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "four.mkv"
    write_clip(source, frames=4, size=(16, 12), audio=False)
    result = cli(source, "-o", tmp_path / "part.mkv", "--model", model_path, "--frames", "2:100", "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result, "WARNING") == [
        f"WARNING: {source}: --frames 2:100 ends past the last frame (the video has 4 frames); wrote frames 2 to 3"
    ]
    assert len(read_frames(tmp_path / "part.mkv")) == 2
    with caplog.at_level(logging.WARNING):  # a range that ends at the last frame is no surprise
        assert upscale(source, "-o", tmp_path / "end.mkv", "--model", model_path, "--frames", "2:4") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert len(read_frames(tmp_path / "end.mkv")) == 2


def test_a_video_container_that_is_not_written_is_named_as_one(tmp_path: Path, short_clip: Path) -> None:
    result = cli(short_clip, "-o", tmp_path / "x.avi", "--model", tmp_path / "missing.safetensors")
    assert result.returncode == 1
    (line,) = stderr_lines(result, "ERROR")
    assert line == (
        f"ERROR: -o {tmp_path / 'x.avi'}: .avi videos are read but not written; "
        "name the output .m4v, .mkv, .mov, .mp4, .webm (or give a folder)"
    )


# -- the second audit: colours, frame sizes, encoder limits, streams a container cannot hold -------------


def the_error_line(result: subprocess.CompletedProcess[str], source: Path) -> str:
    """A failed run's one error line about `source` (the run's summary line aside), with no traceback."""
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in stderr_lines(result, "ERROR") if str(source) in line]
    return line


def decoded_first_frame(path: Path) -> tuple[np.ndarray, int]:
    """The first frame as players decode it, and the colour matrix its stream is tagged with."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24").astype(np.int16), container.streams.video[0].codec_context.colorspace


def test_colour_tags_say_what_the_samples_are(tmp_path: Path, model_path: Path) -> None:
    """A BT.709 film into an RGB encoder must not keep its YUV matrix tag (decoders would read G, B, R
    as Y, Cb, Cr), and an RGB recording into 4:2:0 must not keep the RGB one (invalid in H.264)."""
    film = tmp_path / "film.mp4"
    write_encoded(film, colour_matrix=1)
    for name, codec in (("rgb.mkv", ["--codec", "libx264rgb", "--crf", "0"]), ("ffv1.mkv", ["--codec", "ffv1"])):
        result = cli(film, "-o", tmp_path / name, "--model", model_path, *codec)
        assert result.returncode == 0, result.stderr
    rgb, rgb_matrix = decoded_first_frame(tmp_path / "rgb.mkv")
    ffv1, ffv1_matrix = decoded_first_frame(tmp_path / "ffv1.mkv")
    assert (rgb_matrix, ffv1_matrix) == (0, 0)  # FFmpeg's AVCOL_SPC_RGB
    assert np.abs(rgb - ffv1).max() == 0  # both lossless RGB: the same frames as decoded
    recording = tmp_path / "screen.mkv"
    write_encoded(recording, codec="libx264rgb", pixel_format="rgb24")
    result = cli(recording, "-o", tmp_path / "screen_x4.mp4", "--model", model_path)
    assert result.returncode == 0, result.stderr
    yuv, yuv_matrix = decoded_first_frame(tmp_path / "screen_x4.mp4")
    assert yuv_matrix == 1  # BT.709, as the frames were converted
    assert psnr(yuv, rgb_from_lossless(recording, tmp_path, model_path)) > 35


def rgb_from_lossless(source: Path, tmp_path: Path, model_path: Path) -> np.ndarray:
    result = cli(source, "-o", tmp_path / "reference.mkv", "--model", model_path, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    return decoded_first_frame(tmp_path / "reference.mkv")[0]


def test_a_frame_size_change_is_refused_not_cropped(tmp_path: Path, model_path: Path) -> None:
    """Two MPEG-TS pieces joined (as broadcasts and HLS splice them): 64x48, then 96x64 frames."""
    for name, size in (("a.ts", (64, 48)), ("b.ts", (96, 64))):
        write_encoded(tmp_path / name, size=size)
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    result = cli(spliced, "-o", tmp_path / "out.mkv", "--model", model_path)
    line = the_error_line(result, spliced)
    assert f"{spliced}: frame 4 is 96x64, the frames before it 64x48" in line, line
    assert "--frames 0:4" in line
    assert not (tmp_path / "out.mkv").exists() and not list(tmp_path.glob(".out.mkv*"))
    assert cli(spliced, "-o", tmp_path / "out.mkv", "--model", model_path, "--frames", "0:4").returncode == 0
    assert len(read_frames(tmp_path / "out.mkv")) == 4


def test_sizes_an_encoder_or_this_program_refuses_are_one_line_before_upscaling(
    tmp_path: Path, model_path: Path
) -> None:
    wide = tmp_path / "wide.mkv"  # 4x: 16800 pixels wide, past x264's 16384
    write_encoded(wide, codec="ffv1", pixel_format="yuv444p", frames=1, size=(4200, 8))
    line = the_error_line(cli(wide, "-o", tmp_path / "wide.mp4", "--model", model_path), wide)
    assert f"{wide}: the libx264 encoder refuses 16800x32 frames" in line and "--outscale" in line, line
    bomb = tmp_path / "bomb.mkv"  # a raw YUV4MPEG header that claims 200 megapixels, and 2 kB of data
    bomb.write_bytes(b"YUV4MPEG2 W20000 H10000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(2000))
    line = the_error_line(cli(bomb, "-o", tmp_path / "bomb_x4.mkv", "--model", model_path), bomb)
    assert f"{bomb}: its frames are 20000x10000 pixels, more than" in line, line
    # --frames decodes up to its range first (to find where to cut the audio): the header is checked before that.
    line = the_error_line(cli(bomb, "-o", tmp_path / "bomb_x4.mkv", "--model", model_path, "--frames", "0:1"), bomb)
    assert f"{bomb}: its frames are 20000x10000 pixels, more than" in line, line
    tiny = tmp_path / "tiny.mkv"  # --outscale 0.3 of 4x2 is 1x1: no 4:2:0 frame is that small
    write_encoded(tiny, codec="ffv1", pixel_format="yuv444p", size=(4, 2))
    line = the_error_line(
        cli(tiny, "-o", tmp_path / "tiny_small.mkv", "--model", model_path, "--outscale", "0.3"), tiny
    )
    assert "the output would be 1x1 pixels, too small for yuv420p" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.mkv", "tiny.mkv", "wide.mkv"]


def test_sizes_refused_from_python_name_its_keywords(tmp_path: Path, model_path: Path) -> None:
    """A size the encoder refuses, or an output too small for 4:2:0, met from Python said to give another --codec or
    --outscale, flags of a command the caller never ran; the command line's message is as it was."""
    wide = tmp_path / "wide.mkv"  # 4x: 16800 pixels wide, past x264's 16384
    write_encoded(wide, codec="ffv1", pixel_format="yuv444p", frames=1, size=(4200, 8))
    tiny = tmp_path / "tiny.mkv"  # outscale 0.3 of 4x2 is 1x1: no 4:2:0 frame is that small
    write_encoded(tiny, codec="ffv1", pixel_format="yuv444p", size=(4, 2))
    upscaler = Upscaler(model_path, device="cpu")
    advice = {
        wide: ("; give another codec (ffv1, libvpx-vp9), or a smaller outscale if the size is what it refuses", None),
        tiny: ('(2 pixels a side at least); give a larger outscale, or codec="ffv1"', 0.3),
    }
    for source, (message, outscale) in advice.items():
        with pytest.raises(VideoError) as refused:
            upscale_video(source, tmp_path / "out" / "out.mp4", upscaler, VideoOptions(outscale=outscale))
        assert str(refused.value).endswith(message), refused.value
        assert "--codec" not in str(refused.value) and "--outscale" not in str(refused.value), refused.value
    line = the_error_line(
        cli(tiny, "-o", tmp_path / "out" / "out.mp4", "--model", model_path, "--outscale", "0.3"), tiny
    )
    assert line.endswith("(2 pixels a side at least); give a larger --outscale, or --codec ffv1"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.mkv", "wide.mkv"]


def test_a_video_codec_ffmpeg_cannot_decode_is_one_line(tmp_path: Path, model_path: Path) -> None:
    """A codec FFmpeg does not know (a newer one, a damaged header) leaves PyAV's stream without a decoder."""
    known = tmp_path / "known.mkv"
    write_clip(known, frames=2, size=(16, 12), audio=False)
    unknown = tmp_path / "unknown.mkv"
    unknown.write_bytes(known.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_MPEG4/ISO/XYZ"))
    line = the_error_line(cli(unknown, "-o", tmp_path / "out", "--model", model_path), unknown)
    assert line.endswith(
        f"{unknown}: its video stream #0 is in a codec this FFmpeg cannot decode; "
        "convert it to a common one (e.g. H.264) first, or skip this file"
    ), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known.mkv", "unknown.mkv"]


def test_the_frames_hint_from_python_names_a_frame_range(tmp_path: Path, clip: Path, model_path: Path) -> None:
    """A frame size change or a damaged frame met from Python said "--frames 0:N upscales the frames before it",
    a flag of a command the caller never ran; it now gives the range as VideoOptions takes it."""
    for name, size in (("a.ts", (64, 48)), ("b.ts", (96, 64))):
        write_encoded(tmp_path / name, size=size)
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    broken = bytearray(clip.read_bytes())
    with av.open(str(clip)) as container:
        tenth = [p for p in container.demux(video=0) if p.size][10]
    broken[tenth.pos : tenth.pos + tenth.size] = bytes([0, 255]) * (tenth.size // 2) + bytes(tenth.size % 2)
    (tmp_path / "broken.mp4").write_bytes(bytes(broken))
    upscaler = Upscaler(model_path, device="cpu")
    hints = {
        spliced: r"\(frames=FrameRange\(0, 4\) upscales the 4 frames before it\)",
        tmp_path
        / "broken.mp4": r"cannot be decoded .*\(frames=FrameRange\(0, (\d+)\) upscales the \1 frames before it\)",
    }
    for source, hint in hints.items():
        with pytest.raises(VideoError) as refused:
            upscale_video(source, tmp_path / "out" / "out.mkv", upscaler, VideoOptions())
        assert re.search(hint, str(refused.value)) and "--frames" not in str(refused.value), refused.value
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    line = the_error_line(
        cli(tmp_path / "broken.mp4", "-o", tmp_path / "out" / "out.mkv", "--model", model_path), tmp_path / "broken.mp4"
    )
    assert re.search(r"\(--frames 0:(\d+) upscales the \1 frames before it\)", line), line


def write_with_subtitle(path: Path, codec: str, payload: bytes, milliseconds: int, duration: int | None = None) -> None:
    """Two 16x12 H.264 frames and one subtitle packet of `codec` holding `payload`, at `milliseconds`."""
    with av.open(str(path), "w") as container:
        picture = container.add_stream("libx264", rate=12)
        picture.width, picture.height, picture.pix_fmt = 16, 12, "yuv420p"
        text = container.add_mux_stream(codec, time_base=Fraction(1, 1000))
        for index, pixels in enumerate(pan_frames(2, 16, 12)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
        packet = av.Packet(payload)
        packet.stream, packet.time_base, packet.pts, packet.dts = text, Fraction(1, 1000), milliseconds, milliseconds
        if duration is not None:
            packet.duration = duration
        container.mux(packet)


def test_a_stream_matroska_cannot_hold_names_the_containers_that_can(tmp_path: Path, model_path: Path) -> None:
    """mov_text, the subtitles of MP4 files (phones, HandBrake), is the one codec .mkv cannot hold."""
    source = tmp_path / "subtitled.mp4"
    # a mov_text sample: the text's length, then the text
    write_with_subtitle(source, "mov_text", b"\x00\x02hi", milliseconds=0, duration=150)
    line = the_error_line(cli(source, "-o", tmp_path / "out.mkv", "--model", model_path), source)
    assert line.endswith(
        "its subtitle stream #1 (mov_text) cannot be copied into a .mkv file; write .mp4 or .mov instead (-o NAME.mp4)"
    ), line
    result = cli(source, "-o", tmp_path / "out.mp4", "--model", model_path)
    assert result.returncode == 0, result.stderr
    assert packets(tmp_path / "out.mp4", "subtitle") == [(0.0, b"\x00\x02hi")]


def test_blu_ray_subtitles_are_copied_into_matroska(tmp_path: Path, model_path: Path) -> None:
    """PGS subtitles (Blu-ray rips) were "held by no container srfeat writes": PyAV lists what a container
    holds by decoder names (pgssub, dca), not by the codec's (hdmv_pgs_subtitle, dts)."""
    source = tmp_path / "rip.mkv"
    write_with_subtitle(source, "hdmv_pgs_subtitle", b"\x80\x00\x00", milliseconds=50)  # a PGS END segment
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path)
    assert result.returncode == 0, result.stderr
    assert packets(tmp_path / "out.mkv", "subtitle") == [(0.05, b"\x80\x00\x00")]
    line = the_error_line(cli(source, "-o", tmp_path / "out.mp4", "--model", model_path), source)
    assert line.endswith("(hdmv_pgs_subtitle) cannot be copied into a .mp4 file; write .mkv instead (-o NAME.mkv)")


def test_a_stream_this_ffmpeg_cannot_read_says_what_to_do(tmp_path: Path, model_path: Path) -> None:
    """DVB teletext (European TV recordings): PyAV has no decoder for it, so not even its codec's name."""
    source = tmp_path / "recording.ts"
    with av.open(str(source), "w") as container:
        picture = container.add_stream("mpeg2video", rate=25)
        picture.width, picture.height, picture.pix_fmt = 16, 16, "yuv420p"
        teletext = container.add_mux_stream("dvb_teletext", time_base=Fraction(1, 90000))
        for index, pixels in enumerate(pan_frames(3, 16, 16)):  # fewer: too short for the TS demuxer's probe
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(picture.encode(frame))
            packet = av.Packet(b"\x10" + bytes(45))
            packet.stream, packet.time_base, packet.pts = teletext, Fraction(1, 90000), 3600 * index + 1000
            packet.dts = packet.pts
            container.mux(packet)
        container.mux(picture.encode(None))
    line = the_error_line(cli(source, "-o", tmp_path / "out", "--model", model_path), source)
    assert line.endswith(
        "its subtitle stream #1 is in a codec this FFmpeg cannot read (DVB teletext, say), so it cannot be copied; "
        "remove that stream first (e.g. ffmpeg -map)"
    ), line


def as_players_show(path: Path) -> np.ndarray:
    """The first frame read with its stream's colour matrix or, untagged, the one players assume for its size."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        matrix = frame.colorspace
        if matrix == 2:  # unspecified: BT.709 for HD sizes, BT.601 below (mpv, FFmpeg, browsers)
            matrix = 1 if frame.width >= 1280 or frame.height > 576 else 5
        return frame.to_ndarray(format="rgb24", src_colorspace=matrix).astype(np.int16)


def test_an_untagged_film_keeps_its_colours_when_4x_makes_it_hd(tmp_path: Path) -> None:
    """Untagged 320-pixel-wide (standard definition: BT.601) colour bars come back 1280 wide, where an
    untagged stream is read as BT.709: the output says which matrix its samples are in."""
    bars = np.zeros((16, 320, 3), np.uint8)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (200, 30, 30)]
    for index, colour in enumerate(colours):
        bars[:, index * 40 : (index + 1) * 40] = colour
    source = tmp_path / "bars.mkv"
    write_encoded(source, codec="ffv1", pixel_format="yuv444p", frames=1, size=(320, 16), still=bars)
    for name, codec in (("bars.mp4", "auto"), ("bars_rgb.mkv", "ffv1")):  # the default model keeps colours
        result = cli(source, "-o", tmp_path / name, "--model", "default", "--codec", codec)
        assert result.returncode == 0, result.stderr
    shown, exact = as_players_show(tmp_path / "bars.mp4"), as_players_show(tmp_path / "bars_rgb.mkv")
    assert shown.shape == (64, 1280, 3)
    assert np.abs(shown - exact).mean() < 3  # H.264's error; read with the wrong matrix it was 8.9


def test_an_interlaced_video_gets_a_warning(tmp_path: Path, model_path: Path) -> None:
    """Woven fields upscaled as one picture comb at every moving edge: the user is told to deinterlace."""
    source = tmp_path / "tv.mkv"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"x264-params": "interlaced=1:tff=1"})
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index, pixels in enumerate(pan_frames(2, 32, 24)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    result = cli(source, "-o", tmp_path / "tv_x4.mkv", "--model", model_path)
    assert result.returncode == 0, result.stderr
    (warning,) = stderr_lines(result, "WARNING")
    assert warning.startswith(f"WARNING: {source} is interlaced") and "deinterlace it first" in warning, warning
    assert len(read_frames(tmp_path / "tv_x4.mkv")) == 2


def test_matroska_attachments_are_copied_and_named_where_they_cannot_go(tmp_path: Path, model_path: Path) -> None:
    """The fonts a Matroska file's styled subtitles are drawn with travel as attachments."""
    source = tmp_path / "styled.mkv"
    font = bytes(range(256)) * 4
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        container.add_attachment("Sans.ttf", "font/ttf", font)
        frame = av.VideoFrame.from_ndarray(pan_frames(1, 16, 12)[0], format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    result = cli(source, "-o", tmp_path / "styled_x4.mkv", "--model", model_path)
    assert result.returncode == 0 and "1 stream(s) copied" in result.stderr, result.stderr
    with av.open(str(tmp_path / "styled_x4.mkv")) as container:
        (attachment,) = container.streams.attachments
        assert (attachment.name, attachment.mimetype, attachment.data) == ("Sans.ttf", "font/ttf", font)
    result = cli(source, "-o", tmp_path / "styled_x4.mp4", "--model", model_path)
    assert result.returncode == 0, result.stderr
    expected = f"WARNING: {source}: attachment #1 (Sans.ttf) is not copied: only .mkv holds attachments"
    assert stderr_lines(result, "WARNING") == [f"{expected} (fonts of styled subtitles)"]


def chapter_spans(path: Path) -> list[tuple[float, float, str]]:
    with av.open(str(path)) as container:
        return [
            (
                round(float(c["start"] * c["time_base"]), 3),
                round(float(c["end"] * c["time_base"]), 3),
                c["metadata"]["title"],
            )
            for c in container.chapters()
        ]


def test_chapters_and_the_title_are_kept_and_cut_with_frames(tmp_path: Path, model_path: Path) -> None:
    source = tmp_path / "film.mkv"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        container.metadata["title"] = "A film"
        tick = Fraction(1, 12)
        container.set_chapters(
            [
                {"id": 1, "start": 0, "end": 2, "time_base": tick, "metadata": {"title": "One"}},
                {"id": 2, "start": 2, "end": 4, "time_base": tick, "metadata": {"title": "Two"}},
            ]
        )
        for index, pixels in enumerate(pan_frames(4, 16, 12)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    for name, extra in (("whole.mkv", ()), ("whole.mp4", ()), ("part.mkv", ("--frames", "1:3"))):
        result = cli(source, "-o", tmp_path / name, "--model", model_path, *extra)
        assert result.returncode == 0, result.stderr
    for name in ("whole.mkv", "whole.mp4"):
        assert chapter_spans(tmp_path / name) == [(0.0, 0.167, "One"), (0.167, 0.333, "Two")], name
        with av.open(str(tmp_path / name)) as container:
            assert container.metadata.get("title") == "A film", name
    assert chapter_spans(tmp_path / "part.mkv") == [(0.0, 0.084, "One"), (0.084, 0.167, "Two")]  # frames 1, 2


def test_a_title_that_is_not_utf8_neither_stops_the_upscale_nor_is_made_up(tmp_path: Path, model_path: Path) -> None:
    """A Latin-1 title ("Caf\xe9!"): PyAV 18 and older raise UnicodeDecodeError reading it unless told to
    ignore it; PyAV 19 (what pip installs on Python 3.12 and newer) reads it as is and has no such option:
    srfeat passing the option anyway failed every video there with a TypeError traceback."""
    source = tmp_path / "latin1.mkv"
    with av.open(str(source), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 16, 12, "yuv420p"
        container.metadata["title"] = "Cafe!"
        for index, pixels in enumerate(pan_frames(4, 16, 12)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    held = source.read_bytes()
    assert held.count(b"Cafe!") == 1
    source.write_bytes(held.replace(b"Cafe!", b"Caf\xe9!"))  # same length: Matroska's sizes still hold
    result = cli(source, "-o", tmp_path / "out.mkv", "--model", model_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert len(read_frames(tmp_path / "out.mkv")) == 4
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (64, 48)
        # PyAV 18 and older drop the byte they cannot decode; 19 carries it, written back as it was.
        assert container.metadata.get("title") in ("Caf!", "Caf\udce9!")


def test_tags_that_count_the_inputs_packets_or_name_its_encoder_are_not_carried(
    tmp_path: Path, model_path: Path
) -> None:
    """mkvmerge tags every track with statistics (frames, bytes, bit rate); carried over, a 2-frame slice
    of an x264 re-encode said 1000 frames at the input's bit rate, made by the input's encoder."""
    source = tmp_path / "untagged.mp4"  # MP4's packets all have decoding times, as muxing needs
    write_clip(source, frames=4, size=(16, 12))
    statistics = {
        "BPS-eng": "999999",
        "NUMBER_OF_FRAMES-eng": "1000",
        "NUMBER_OF_BYTES-eng": "123456789",
        "_STATISTICS_WRITING_APP-eng": "mkvmerge v80.0",
        "_STATISTICS_TAGS-eng": "BPS DURATION NUMBER_OF_FRAMES NUMBER_OF_BYTES",
    }
    tagged = tmp_path / "in.mkv"
    with av.open(str(source)) as original, av.open(str(tagged), "w") as copy:
        streams = {}
        for stream in original.streams:
            streams[stream.index] = copy.add_stream_from_template(stream)
            streams[stream.index].metadata.update({"title": f"the {stream.type}", **statistics})
        streams[0].metadata["ENCODER"] = "Lavc61 libvpx-vp9"
        for packet in original.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                copy.mux(packet)
    result = cli(tagged, "-o", tmp_path / "out.mkv", "--model", model_path, "--frames", "0:2")
    assert result.returncode == 0, result.stderr
    with av.open(str(tmp_path / "out.mkv")) as output:
        tags = [{k: v for k, v in stream.metadata.items() if k != "DURATION"} for stream in output.streams]
    assert tags == [{"title": "the video"}, {"title": "the audio"}]


def test_which_track_plays_by_default_and_forced_subtitles_are_kept(tmp_path: Path, model_path: Path) -> None:
    """A French film with an English commentary: French is the default track, its forced subtitles
    (the foreign-language lines) are shown without asking. Both flags are the input's, not the muxer's."""
    from av.stream import Disposition

    source = tmp_path / "film.mkv"
    with av.open(str(source), "w") as container:
        picture = container.add_stream("libx264", rate=12)
        picture.width, picture.height, picture.pix_fmt = 16, 12, "yuv420p"
        tracks = []
        for language, disposition in (("eng", Disposition(0)), ("fra", Disposition.default)):
            track = container.add_stream("pcm_s16le", rate=8000)
            track.layout, track.metadata["language"], track.disposition = "mono", language, disposition
            tracks.append(track)
        text = container.add_mux_stream("subrip", time_base=Fraction(1, 1000))
        text.disposition = Disposition.forced
        for index, pixels in enumerate(pan_frames(2, 16, 12)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
        for track in tracks:
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1333), np.int16), format="s16", layout="mono")
            sound.sample_rate, sound.pts = 8000, 0
            container.mux(track.encode(sound))
            container.mux(track.encode(None))
        line = av.Packet(b"Bonjour")
        line.stream, line.time_base, line.pts, line.dts, line.duration = text, Fraction(1, 1000), 0, 0, 100
        container.mux(line)
    result = cli(source, "-o", tmp_path / "film_x4.mkv", "--model", model_path)
    assert result.returncode == 0, result.stderr
    with av.open(str(tmp_path / "film_x4.mkv")) as container:
        flags = [(s.type, s.metadata.get("language"), s.disposition) for s in container.streams if s.type != "video"]
    assert flags == [
        ("audio", "eng", Disposition(0)),
        ("audio", "fra", Disposition.default),
        ("subtitle", None, Disposition.forced),
    ]


def test_files_joined_end_to_end_keep_their_audio_in_order(tmp_path: Path, model_path: Path) -> None:
    """`cat a.ts b.ts > joined.ts` (TV recordings, camcorder segments): both halves' timestamps start
    over; the frames and the copied audio continue from where the first half ended."""
    for name in ("a.ts", "b.ts"):
        write_clip(tmp_path / name, frames=6, fps=12)
    joined = tmp_path / "joined.ts"
    joined.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    result = cli(joined, "-o", tmp_path / "joined.mp4", "--model", model_path)
    assert result.returncode == 0, result.stderr
    assert any("timestamps go back" in line for line in stderr_lines(result, "WARNING")), result.stderr
    times = frame_times(tmp_path / "joined.mp4")
    assert len(times) == 12 and all(b > a for a, b in itertools.pairwise(times))
    sound = [time for time, _ in packets(tmp_path / "joined.mp4", "audio")]
    assert all(b > a for a, b in itertools.pairwise(sound))
    assert audio_samples(tmp_path / "joined.mp4") == audio_samples(joined)


@pytest.mark.parametrize("frames", ["2:8", "14:20"])
def test_a_frames_slice_of_joined_files_takes_the_audio_of_its_own_moment(
    tmp_path: Path, model_path: Path, frames: str
) -> None:
    """Each half's timestamps start over, so a time names a moment in both halves: the slice's audio
    was taken from both (twice as long), and frames of the second half started 1 s late."""
    for name in ("a.ts", "b.ts"):
        write_clip(tmp_path / name, frames=12, fps=12)
    joined = tmp_path / "joined.ts"
    joined.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    output = tmp_path / "slice.mkv"
    result = cli(joined, "-o", output, "--model", model_path, "--frames", frames, "--codec", "ffv1")
    assert result.returncode == 0, result.stderr
    assert frame_times(output) == pytest.approx([i / 12 for i in range(6)], abs=1e-3)
    assert abs(audio_samples(output) - AUDIO_RATE * 6 // 12) <= AUDIO_FRAME  # half a second, to a packet
    assert packets(output, "audio")[0][0] < 1 / 12


def test_a_video_is_never_written_over_itself_and_ctrl_c_keeps_the_output_it_replaces(
    tmp_path: Path, model_path: Path
) -> None:
    # --overwrite wrote the upscale over the input (the original gone); -o a hard link to the input said the output
    # "exists; use --overwrite", which then replaced that name, and a symbolic link was replaced by a file
    source = tmp_path / "mine.mkv"
    write_clip(source, frames=240, audio=False)
    original = source.read_bytes()
    (tmp_path / "hard.mkv").hardlink_to(source)
    (tmp_path / "link.mkv").symlink_to(source)
    spelled = tmp_path / "sub" / ".." / "mine.mkv"  # the same file under another spelling
    for target in (source, spelled, tmp_path / "hard.mkv", tmp_path / "link.mkv"):
        for overwrite in ((), ("--overwrite",)):
            result = cli(source, "-o", target, "--model", model_path, *overwrite)
            errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
            assert result.returncode == 1 and len(errors) == 1, result.stderr
            assert f"the output {target} is an input" in errors[0] and "choose another -o" in errors[0], errors
            assert "never replaced, not even with --overwrite" in errors[0], errors
    assert source.read_bytes() == original and os.path.samefile(source, tmp_path / "hard.mkv")
    assert os.readlink(tmp_path / "link.mkv") == str(source)
    # --overwrite of an earlier output: it stays whole until the new file is complete.
    earlier = tmp_path / "mine_x4.mkv"
    earlier.write_bytes(b"an earlier upscale")
    command = [sys.executable, "-m", "srfeat.cli", "upscale", str(source), "-o", str(earlier), "--overwrite"]
    command += ["--model", str(model_path), "--codec", "ffv1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".mine_x4.mkv.*.tmp")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # frames are being written to the temporary file
    assert process.poll() is None, "finished before it could be interrupted; make the clip longer"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert source.read_bytes() == original and earlier.read_bytes() == b"an earlier upscale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.mkv", "link.mkv", "mine.mkv", "mine_x4.mkv"]


def test_from_python_a_video_is_never_written_over_itself_replace_or_not(
    tmp_path: Path, short_clip: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # upscale_video(src, src) replaced the input with its upscale (replace=True is the default), and through a
    # hard link too; with replace=False it said to pass replace=True
    from srfeat.files import OutputIsInputError
    from srfeat.video import pipeline

    source = tmp_path / "mine.mp4"
    source.write_bytes(short_clip.read_bytes())
    (tmp_path / "hard.mp4").hardlink_to(source)
    upscaler = Upscaler(model_path, device="cpu")
    monkeypatch.setattr(pipeline, "import_av", lambda source: pytest.fail("the video was opened"))
    for target in (source, str(source), tmp_path / "hard.mp4", tmp_path / "sub" / ".." / "mine.mp4"):
        for replace in (True, False):
            with pytest.raises(OutputIsInputError, match=r"is the input .*mine\.mp4 .*: choose another output"):
                upscale_video(source, target, upscaler, VideoOptions(), replace=replace)
    assert source.read_bytes() == short_clip.read_bytes() and os.path.samefile(source, tmp_path / "hard.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.mp4", "mine.mp4"]


@pytest.mark.parametrize("flag", ["no", 0, None])
def test_from_python_a_replace_that_is_not_true_or_false_or_a_path_that_is_not_one_is_refused(
    tmp_path: Path, short_clip: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch, flag: object
) -> None:
    """`upscale_video(..., replace="no")` replaced the target (the string is true); a source of 5 was pathlib's
    TypeError from inside."""
    from srfeat.errors import InvalidOptionError
    from srfeat.video import pipeline

    target = tmp_path / "kept.mp4"
    target.write_bytes(b"the user's video")
    upscaler = Upscaler(model_path, device="cpu")
    monkeypatch.setattr(pipeline, "import_av", lambda source: pytest.fail("the video was opened"))
    with pytest.raises(InvalidOptionError, match=f"replace must be True or False, got {type(flag).__name__}"):
        upscale_video(short_clip, target, upscaler, VideoOptions(), replace=flag)  # pyright: ignore[reportArgumentType]
    assert target.read_bytes() == b"the user's video"
    for source, output, what in ((5, target, "the video"), (short_clip, 5, "the output video")):
        with pytest.raises(InvalidOptionError, match=f"{what} must be a path .*, got int 5"):
            upscale_video(source, output, upscaler, VideoOptions())  # pyright: ignore[reportArgumentType]


def test_an_output_saved_while_the_video_is_upscaled_is_kept(tmp_path: Path, model_path: Path) -> None:
    """Without --overwrite, a file that appears at the output's name during a long run is not replaced."""
    source = tmp_path / "long.mkv"
    write_clip(source, frames=240, audio=False)
    target = tmp_path / "out" / "long.mkv"
    command = [sys.executable, "-m", "srfeat.cli", "upscale", str(source), "-o", str(target)]
    command += ["--model", str(model_path), "--codec", "ffv1", "--frames", "0:60"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(target.parent.glob(".long.mkv.*.tmp")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "finished before the output could appear; make the clip longer"
    target.write_bytes(b"saved meanwhile")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert "appeared while it was being written" in stderr and "Traceback" not in stderr, stderr
    assert target.read_bytes() == b"saved meanwhile"
    assert sorted(p.name for p in target.parent.iterdir()) == ["long.mkv"]


def test_hevc_in_mp4_and_mov_is_tagged_hvc1_so_apple_players_play_it(tmp_path: Path, model_path: Path) -> None:
    """FFmpeg's MP4 muxer tags HEVC `hev1`, which QuickTime, Safari and iPhones refuse to play."""
    source = tmp_path / "clip.mp4"
    write_encoded(source, frames=2, size=(16, 16))
    for extension in (".mp4", ".mov"):
        target = tmp_path / f"clip_x4{extension}"
        result = cli(source, "-o", target, "--codec", "libx265", "--model", model_path)
        assert result.returncode == 0, result.stderr
        with av.open(str(target)) as container:
            assert container.streams.video[0].codec_context.codec_tag == "hvc1"
        assert len(read_frames(target)) == 2


def test_frames_checked_for_captions_are_freed_without_the_garbage_collector(tmp_path: Path) -> None:
    """The caption check asked each frame for `frame.side_data`, a container the frame keeps and which points
    back at it: every decoded frame then lived on, with its decoder buffers, until the garbage collector ran
    (a 240-frame clip's upscale peaked 50 MB higher than a 24-frame one's). Now they go as they are dropped."""
    import gc

    from srfeat.video.probe import FrameDefects, display_matrix

    source = tmp_path / "clip.mp4"
    write_clip(source, frames=30, audio=False)
    defects = FrameDefects(source)
    gc.collect()
    gc.disable()
    try:
        with av.open(str(source)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                defects.check(frame, index)
                assert display_matrix(frame, source) is None
                del frame  # the loop's own reference, not one to count
        # type(), not isinstance: isinstance reads an object's __class__, and torch.distributed's deprecated
        # reduce_op warns (FutureWarning) when anything does.
        alive = [item for item in gc.get_objects() if issubclass(type(item), av.VideoFrame)]
    finally:
        gc.enable()
    assert alive == []
    assert not defects.captions and not defects.damaged


def test_closed_captions_inside_the_video_are_said_to_be_lost(tmp_path: Path, model_path: Path) -> None:
    """CEA-608/708 captions ride in the H.264 frames' SEI messages; frames encoded anew drop them, unsaid before."""
    source = tmp_path / "broadcast.mkv"
    write_captioned(source)
    with av.open(str(source)) as container:
        assert any(Type.A53_CC in frame.side_data for frame in container.decode(video=0))
    result = cli(source, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 0, result.stderr
    expected = (
        f"WARNING: {source}: its video carries closed captions (CEA-608/708) inside its frames, which the "
        "upscaled frames do not: they are lost; extract them first if they are needed (e.g. ccextractor)"
    )
    assert stderr_lines(result, "WARNING") == [expected], result.stderr
    assert len(read_frames(tmp_path / "out" / "broadcast.mkv")) == 3


@pytest.mark.parametrize(
    ("name", "codec", "pixel_format"), [("logo.mov", "png", "rgba"), ("logo.webm", "libvpx-vp9", "yuva420p")]
)
def test_a_transparent_video_is_told_its_output_is_opaque(
    tmp_path: Path, model_path: Path, name: str, codec: str, pixel_format: str
) -> None:
    """Frames go through the network as RGB: an alpha channel (PNG or ProRes 4444 in MOV, VP9 in WebM)
    is lost, which the user is told rather than find an opaque overlay."""
    source = tmp_path / name
    write_encoded(source, codec=codec, pixel_format=pixel_format, frames=2, size=(16, 16))
    result = cli(source, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 0, result.stderr
    (warning,) = stderr_lines(result, "WARNING")
    assert warning.startswith(f"WARNING: {source} has an alpha channel") and "opaque" in warning, warning
    assert len(read_frames(tmp_path / "out" / name)) == 2
    with av.open(str(tmp_path / "out" / name)) as output:  # not tagged transparent (WebM's alpha_mode)
        assert "ALPHA_MODE" not in {key.upper() for key in output.streams.video[0].metadata}
    opaque = tmp_path / "opaque.mp4"
    write_encoded(opaque, frames=2, size=(16, 16))
    result = cli(opaque, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 0 and not stderr_lines(result, "WARNING"), result.stderr


def test_audio_mov_refuses_is_named_as_the_containers_not_as_broken_timestamps(
    tmp_path: Path, model_path: Path
) -> None:
    """MOV holds FLAC and Opus only in MP4: FFmpeg refuses the header, which was reported at the first
    packet as "its audio packet at 0.00 s cannot be copied (Invalid argument); its timestamps are broken"."""
    source = tmp_path / "flac.mkv"
    with av.open(str(source), "w") as container:
        picture = container.add_stream("libx264", rate=12)
        picture.width, picture.height, picture.pix_fmt = 16, 16, "yuv420p"
        sound = container.add_stream("flac", rate=8000)
        sound.layout = "mono"
        for index, pixels in enumerate(pan_frames(2, 16, 16)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(picture.encode(frame))
        container.mux(picture.encode(None))
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
        chunk.sample_rate, chunk.pts = 8000, 0
        container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    target = tmp_path / "flac_x4.mov"
    result = cli(source, "-o", target, "--model", model_path)
    assert result.returncode == 1
    assert the_error_line(result, source) == (
        f"ERROR: {source}: its streams cannot be written into a .mov file (flac only supported in MP4.); "
        "write .mkv instead (-o NAME.mkv)"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["flac.mkv"]
    assert cli(source, "-o", tmp_path / "flac_x4.mkv", "--model", model_path).returncode == 0


def test_av1_encodes_quietly(tmp_path: Path, model_path: Path) -> None:
    """SVT-AV1 printed some 20 lines of its settings and a thread-priority warning, as x265 did."""
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this FFmpeg has no SVT-AV1")
    source = tmp_path / "clip.mkv"
    write_encoded(source, codec="ffv1", pixel_format="yuv444p", frames=2, size=(16, 16))
    env = {key: value for key, value in os.environ.items() if key != "SVT_LOG"}
    command = [sys.executable, "-m", "srfeat.cli", "upscale", str(source), "-o", str(tmp_path / "out.mkv")]
    command += ["--model", str(model_path), "--codec", "libsvtav1"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr.splitlines() if not line.startswith("INFO: ")] == [], result.stderr
    assert len(read_frames(tmp_path / "out.mkv")) == 2


def test_an_encoder_that_refuses_its_settings_says_why(tmp_path: Path, model_path: Path) -> None:
    """An encoder that cannot be opened was always said to refuse the frame size ("give a smaller
    --outscale"), whatever it refused: MJPEG refuses limited-range YUV, MPEG-2 most frame rates."""
    source = tmp_path / "clip.mp4"
    write_encoded(source, frames=1, size=(16, 16))
    line = the_error_line(cli(source, "-o", tmp_path / "out.mkv", "--codec", "mjpeg", "--model", model_path), source)
    assert f"{source}: the mjpeg encoder refuses 64x64 frames (Non full-range YUV is non-standard" in line, line
    assert "give another --codec (libx264, ffv1, libvpx-vp9)" in line, line
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4"]


def test_a_frames_slice_keeps_the_subtitle_on_screen_when_it_starts(tmp_path: Path, model_path: Path) -> None:
    """A line shown from 0 s to 0.9 s is on screen at 0.5 s, where `--frames 6:18` starts: it was dropped
    (only lines that start inside the span were kept); it is kept from 0 for its remaining 0.4 s."""
    source = tmp_path / "film.mkv"
    write_clip(source, frames=24, fps=12, size=(16, 16), subtitles=("zero", "one"))
    output = tmp_path / "slice.mkv"
    result = cli(source, "-o", output, "--frames", "6:18", "--model", model_path)
    assert result.returncode == 0, result.stderr
    assert packets(output, "subtitle") == [(0.0, b"zero"), (0.5, b"one")]
    with av.open(str(output)) as container:
        stream = container.streams.subtitles[0]
        durations = [float(p.duration * stream.time_base) for p in container.demux(stream) if p.size]
    assert durations == pytest.approx([0.4, 0.9])
    # Audio is not cut mid-packet that way: only packets that start in the span are kept.
    assert packets(output, "audio")[0][0] >= 0.0


def test_dvd_and_raw_yuv_videos_in_a_folder_are_upscaled_as_videos(tmp_path: Path, model_path: Path) -> None:
    # A folder's .vob (a DVD's MPEG-2 programme stream) and .y4m (raw frames) were left out of the
    # scan, and named as inputs they were read as images: "cannot identify image file"
    folder = tmp_path / "rips"
    folder.mkdir()
    write_encoded(folder / "dvd.vob", codec="mpeg2video", container_format="vob")
    write_encoded(folder / "raw.y4m", codec="rawvideo", container_format="yuv4mpegpipe")
    result = cli(folder, "-o", tmp_path / "out", "--model", model_path)
    assert result.returncode == 0, result.stderr
    for name in ("dvd.mkv", "raw.mkv"):  # containers srfeat does not write become Matroska
        assert [frame.shape for frame in read_frames(tmp_path / "out" / name)] == [(192, 256, 3)] * 4
    named = cli(folder / "dvd.vob", "-o", tmp_path / "named", "--model", model_path)
    assert named.returncode == 0 and (tmp_path / "named" / "dvd.mkv").is_file(), named.stderr
