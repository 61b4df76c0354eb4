"""The times a `--frames` range cuts at: those the upscale gives its first frame and the frame after its last,
found by reading the file up to there as the upscale reads it (`InputFrames`), so that the audio and subtitles are
cut where the range's frames are shown. FFmpeg's own times differ: an AVI chunk whose header is damaged puts every
later frame a frame early (`AviIndex` mends them), and the audio was cut a frame early with them."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from srfeat.errors import VideoError
from srfeat.video import FrameRange, frames_option
from srfeat.video.input_frames import Frame, InputFrames
from srfeat.video.probe import TimeWindow, frame_step, main_video_stream, open_for_reading, seconds_of, time_base_of

__all__ = ["time_window"]


def time_window(av: ModuleType, source: Path, frames: FrameRange, *, command_line: bool = False) -> TimeWindow:
    """Decode up to frame B once to learn the times of frames A and B, which cut the audio (up to frame A
    for a range with no end: the audio then runs to the end, and the whole file was decoded twice). A range
    that starts past the last frame is refused naming `--frames` for the command line, else `frames`; a frame
    that does not decode before frame B is the upscale's own error line (where, and the range before it).

    The times are the ones the upscale gives the frames: in files joined end to end, whose timestamps start
    over, a time names one moment, not one in each part; in an AVI past a chunk the demuxer passed over, the
    frame's own place, not FFmpeg's a frame early.
    """
    # Frame B (or A, for a range with no end) is the last one wanted: it only times the range's end.
    timed = FrameRange(frames.start, (frames.start if frames.stop is None else frames.stop) + 1)
    start: float | None = None
    last: Frame | None = None
    with open_for_reading(av, source) as probe:
        stream = main_video_stream(probe)
        assert stream is not None  # checked on the first opening
        time_base, step = time_base_of(stream), frame_step(stream)
        reading = InputFrames(av, source, probe, stream, timed, None, None, None, None, step, command_line=command_line)
        try:
            for item in reading:
                assert isinstance(item, Frame)  # no copied stream is read
                last = item
                if last.index == frames.start:
                    start = seconds_of(last.pts, time_base)
                if last.index + 1 == timed.stop:
                    break
        except VideoError:
            if start is None or frames.stop is None or last is None or last.index + 1 < frames.stop:
                raise
            # Where frame B (or the decoder's flush) fails, the range's frames all decoded: it ends a frame after
            # the last of them. "--frames A:B upscales the frames before it" was said, the range given.
            return TimeWindow(start, seconds_of(last.pts + step, time_base))
    if start is None:
        given = frames_option(frames, command_line=command_line)
        raise VideoError(
            f"{source}: {given} starts past the last frame (the video has {reading.decoded_frames} frames)"
        )
    assert last is not None
    ended = frames.stop is not None and last.index == frames.stop
    return TimeWindow(start, seconds_of(last.pts, time_base) if ended else None)
