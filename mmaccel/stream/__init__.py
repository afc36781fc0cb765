"""Streaming video: carrier-token sessions (:mod:`.session`) and frame sources (:mod:`.sources`)."""

from .session import STREAM_FAMILIES, FrameMemory, StreamSession, stream

__all__ = ["STREAM_FAMILIES", "FrameMemory", "StreamSession", "stream"]
