"""synthloop: synthetic interactions and feedback, replay against model versions, paired gates."""

from __future__ import annotations

import os

# Offline by default: Hugging Face libraries never phone home for local data.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

__all__ = ["__version__"]
