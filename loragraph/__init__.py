"""loragraph: modular LLM pipelines of per-task LoRA adapters on one shared quantized base.

    from loragraph import Pipeline
    pipeline = Pipeline.from_yaml("examples/customer_service/pipeline.yaml")
    result = pipeline.run("Hi, where is my order #A-48213?")
    result.outputs["intent"]["label"], result.reply, result.trace
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# No network is configured by default: hub look-ups must fail at once, not after retries.
# Set HF_HUB_OFFLINE=0 explicitly where the hub is reachable.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from loragraph.router.router import Router as Pipeline

__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__"]


def __getattr__(name: str) -> Any:
    # lazy: `import loragraph` must not import torch
    if name == "Pipeline":
        from loragraph.router.router import Router

        return Router
    raise AttributeError(f"module 'loragraph' has no attribute {name!r}")
