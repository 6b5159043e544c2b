"""Where output frames go: a video file (in order, from scratch, encoded in a background thread so that
encoding overlaps the model) or a frame folder (any order, resumable), each with an optional GIF
preview; and a background reader that decodes input frames ahead of the model."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import torch

from cdfi.inference.video.audio import TrackMuxer
from cdfi.io.images import read_image
from cdfi.io.video import FolderWriter, GifPreview, VideoWriter

T = TypeVar("T")

_POLL = 0.1
"""Seconds between checks of the other thread while waiting on a queue."""


class FrameSink(Protocol):
    """Output frame ``index`` goes to ``put``; ``skip`` for frames already on disk (resume)."""

    count: int

    def done(self, index: int) -> bool: ...

    def put(self, index: int, frame: torch.Tensor) -> None: ...

    def skip(self, index: int) -> None: ...


class BackgroundWriter:
    """Runs ``write(index, frame)`` in a thread, ``depth`` frames behind the caller. A failure in the
    thread is raised in the caller at the next ``put`` or at ``close``."""

    def __init__(self, write: Callable[[int, torch.Tensor], None], depth: int = 4) -> None:
        self._write = write
        self._queue: queue.Queue[tuple[int, torch.Tensor] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="cdfi-video-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None or self._stop:
                continue
            try:
                self._write(*item)
            except BaseException as exc:  # handed to the caller, who decides
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._stop = True
            raise error

    def _offer(self, item: tuple[int, torch.Tensor] | None) -> None:
        while True:
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    return
                if item is not None:
                    self._raise()

    def put(self, index: int, frame: torch.Tensor) -> None:
        self._raise()
        self._offer((index, frame))

    def close(self) -> None:
        """Wait until every frame is written; raise the thread's failure, if any."""
        self._offer(None)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Drop what is queued and stop the thread (after an error or Ctrl-C in the caller)."""
        self._stop = True
        self._offer(None)
        self._thread.join()


class VideoSink:
    """Frames into an open ``VideoWriter`` (plus the other tracks through ``muxer``, kept ``LEAD`` ahead of
    the video), written by a ``BackgroundWriter``."""

    def __init__(
        self,
        writer: VideoWriter,
        fps: float,
        preview: GifPreview | None,
        muxer: TrackMuxer | None,
        background: bool = True,
    ) -> None:
        self.writer, self.fps, self.preview, self.muxer = writer, fps, preview, muxer
        self.count = 0
        self._thread = BackgroundWriter(self._write) if background else None

    def _write(self, index: int, frame: torch.Tensor) -> None:
        self.writer.write(frame)
        if self.muxer is not None:
            self.muxer.advance((index + 1) / self.fps)

    def done(self, index: int) -> bool:
        return False

    def put(self, index: int, frame: torch.Tensor) -> None:
        if self.preview is not None and index < self.preview.max_frames:
            self.preview.add(frame)
        if self._thread is not None:
            self._thread.put(index, frame)
        else:
            self._write(index, frame)
        self.count += 1

    def skip(self, index: int) -> None:
        raise AssertionError("a video is always written from scratch")

    def close(self) -> None:
        """Write what is queued, then the rest of the other tracks."""
        if self._thread is not None:
            self._thread.close()
        if self.muxer is not None:
            self.muxer.finish()

    def abort(self) -> None:
        if self._thread is not None:
            self._thread.abort()
        if self.muxer is not None:
            self.muxer.close()


class FolderSink:
    """Frames into a ``FolderWriter``; frames already on disk are kept (resume)."""

    def __init__(self, folder: FolderWriter, preview: GifPreview | None) -> None:
        self.folder, self.preview = folder, preview
        self.count = 0

    def done(self, index: int) -> bool:
        return self.folder.exists(index)

    def put(self, index: int, frame: torch.Tensor) -> None:
        if self.preview is not None and index < self.preview.max_frames:
            self.preview.add(frame)
        if not self.done(index):
            self.folder.write(index, frame)
        self.count += 1

    def skip(self, index: int) -> None:
        """Frame already on disk (resume): only the preview may need it."""
        if self.preview is not None and index < self.preview.max_frames:
            self.preview.add(read_image(self.folder.name(index)))
        self.count += 1

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Prefetch(Iterator[T]):
    """``source`` read in a thread, up to ``depth`` items ahead; errors arrive in order with the items.
    ``close`` stops the thread (and closes ``source``, in that thread)."""

    _END = object()

    def __init__(self, source: Iterator[T], depth: int = 3) -> None:
        self._source = source
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="cdfi-video-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put((True, item)):
                    break
            else:
                self._put((True, self._END))
        except BaseException as exc:  # forwarded to the reader
            self._put((False, exc))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self._finished = True
            raise item
        if item is self._END:
            self._finished = True
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._finished = True
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=_POLL)
        self._thread.join()


__all__ = ["BackgroundWriter", "FolderSink", "FrameSink", "Prefetch", "VideoSink"]
