"""loragraph: modular LLM pipelines of per-task LoRA adapters on one shared quantized base."""

from __future__ import annotations

import os

# No network is configured by default: hub look-ups must fail at once, not after retries.
# Set HF_HUB_OFFLINE=0 explicitly where the hub is reachable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
__all__ = ["__version__"]
