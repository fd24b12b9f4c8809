"""The `loragraph` command: a thin, typed layer over the rooms, one function per subcommand.

Each subcommand function takes the parsed ``argparse.Namespace`` and returns an exit code.
Business logic lives in the rooms; errors are ``LoragraphError`` and print as one clear
line (``where: message``) with exit code 2 for user mistakes and 1 for runtime failures.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loragraph.errors import LoragraphError, UserError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


# --------------------------------------------------------------------------- base


def cmd_base_prepare(args: argparse.Namespace) -> int:
    from loragraph.adapters.base import prepare_base

    path = prepare_base(force=args.force)
    print(f"bundled base ready: {path}")
    return 0


def cmd_base_info(args: argparse.Namespace) -> int:
    from loragraph.adapters.base import BaseSpec, base_info, load_base

    info = base_info(load_base(BaseSpec(name=args.name, quantization=args.quantization)))
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            if key != "fingerprint_parts":
                print(f"{key:>15}: {value}")
    return 0


def _add_base(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from loragraph.adapters.base import DEFAULT_BASE, QUANTIZATIONS

    base = sub.add_parser("base", help="prepare and inspect the shared base model")
    bsub = base.add_subparsers(dest="base_command", required=True)
    p = bsub.add_parser("prepare", help="convert the bundled SmolLM2-135M-Instruct GGUF into a model folder (once)")
    p.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    p.set_defaults(handler=cmd_base_prepare)
    p = bsub.add_parser("info", help="name, parameters, quantization, memory and fingerprint of a base")
    p.add_argument("--name", default=DEFAULT_BASE, help=f"bundled name, local folder or hub id (default {DEFAULT_BASE})")
    p.add_argument("--quantization", "-q", default="nf4", choices=QUANTIZATIONS, help="default nf4")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_base_info)


# --------------------------------------------------------------------------- parser

_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    _add_base,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loragraph",
        description="Modular LLM pipelines of per-task LoRA adapters on one shared quantized base.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _GROUPS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except LoragraphError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UserError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

