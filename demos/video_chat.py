"""The streaming video chat demo: ``python demos/video_chat.py [--model ...]`` (same as ``mmaccel demo``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from mmaccel.demo import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
