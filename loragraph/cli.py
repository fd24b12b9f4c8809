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

from loragraph.errors import ConfigError, InputError, LoragraphError, NotFoundError, UserError

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _threshold_list(spec: str) -> tuple[float, ...]:
    """``"0.05,0.2,0.5"`` -> ``(0.05, 0.2, 0.5)`` (argparse type: a bad item is a usage error)."""
    try:
        return tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers between 0 and 1, got `{spec}`") from None


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


# --------------------------------------------------------------------------- align


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU threads for this process (None: torch's choice)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def cmd_align(args: argparse.Namespace) -> int:
    from loragraph.adapters.registry import Registry
    from loragraph.training.dpo import AlignConfig, align, load_align_config

    config = load_align_config(args.config) if args.config else AlignConfig()
    overrides = {k: getattr(args, k) for k in ("max_pairs", "max_steps", "promote") if getattr(args, k) is not None}
    if overrides:
        from pydantic import ValidationError

        from loragraph.training.config import config_error

        try:
            config = AlignConfig.model_validate({**config.model_dump(), **overrides})
        except ValidationError as exc:
            raise config_error(exc, where="command line") from exc
    _set_threads(args.threads)
    registry = Registry()
    version = align(
        args.adapter,
        args.pairs,
        config,
        eval_pairs_path=args.eval_pairs,
        test_path=args.test,
        registry=registry,
        progress=lambda msg: print(msg, file=sys.stderr),
    )
    promoted = registry.promoted(version.name).version == version.version
    if args.json:
        _print_json({"version": version.ref, "parent": version.manifest.parent, "promoted": promoted,
                     "metrics": version.manifest.metrics})
    else:
        print(f"published {version.ref} (parent v{version.manifest.parent}, method dpo, "
              f"{'promoted' if promoted else 'not promoted'})")
        for key, value in version.manifest.metrics.items():
            print(f"{key:>32}: {value:.4f}" if isinstance(value, float) else f"{key:>32}: {value}")
    return 0


def _add_align(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "align",
        help="preference-tune a generate adapter with DPO on pairs and publish a new version",
        description="Continue ADAPTER (`reply` = its promoted version, `reply@v2` pinned) with DPO on "
        "preference pairs ({\"input\", \"chosen\", \"rejected\"} JSONL); the reference is that version itself. "
        "Publishes the next version with parent, method `dpo` and before/after metrics; promotes it only "
        "with `promote: if_better` and a passing gate.",
    )
    p.add_argument("adapter", help="adapter reference: `reply` (promoted version) or `reply@v2`")
    p.add_argument("--pairs", required=True, type=Path, help="training preference pairs (JSONL)")
    p.add_argument("--config", type=Path, help="DPO settings YAML (see examples/customer_service/train/reply_dpo.yaml)")
    p.add_argument("--eval-pairs", type=Path, help="held-out pairs for preference accuracy (overrides `eval_pairs`)")
    p.add_argument("--test", type=Path, help="generate test split for ROUGE-L before/after (overrides `test`)")
    p.add_argument("--max-pairs", type=int, help="train on at most this many pairs (overrides `max_pairs`)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides `max_steps`)")
    p.add_argument("--promote", choices=["never", "if_better"], help="overrides `promote`")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_align)


# --------------------------------------------------------------------------- pipeline


def cmd_pipeline_validate(args: argparse.Namespace) -> int:
    from loragraph.pipelines.validate import validate_pipeline

    registry = None if args.no_registry else (args.registry or _default_registry_root())
    problems = validate_pipeline(args.file, registry=registry, base_fingerprint=args.base_fingerprint)
    checked = "structure only" if registry is None else f"against registry {registry}"
    if args.json:
        _print_json({"file": str(args.file), "checked": checked, "ok": not problems,
                     "problems": [{"where": p.where, "message": p.message} for p in problems]})
    elif problems:
        print(f"{args.file}: {len(problems)} problem(s) ({checked}):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    else:
        print(f"{args.file}: ok ({checked})")
    return 2 if problems else 0


def _default_registry_root() -> Path:
    from loragraph.adapters.base import loragraph_home

    return loragraph_home() / "adapters"


def cmd_pipeline_draw(args: argparse.Namespace) -> int:
    from loragraph.pipelines.draw import write_drawings
    from loragraph.pipelines.spec import load_pipeline

    mmd, png = write_drawings(load_pipeline(args.file), args.out)
    print(f"wrote {mmd}")
    print(f"wrote {png}")
    return 0


def _add_pipeline(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pipe = sub.add_parser("pipeline", help="check and draw pipeline files")
    psub = pipe.add_subparsers(dest="pipeline_command", required=True)
    p = psub.add_parser("validate", help="print every static problem of a pipeline file (exit 2 if any)")
    p.add_argument("file", type=Path, help="pipeline YAML file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--registry", type=Path, default=None, help="adapter registry folder (default $LORAGRAPH_HOME/adapters)")
    where.add_argument("--no-registry", action="store_true", help="check the file alone, without the adapters")
    p.add_argument("--base-fingerprint", default=None, help="fingerprint of the base to run on (`loragraph base info`)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_pipeline_validate)
    p = psub.add_parser("draw", help="write PREFIX.mmd (Mermaid) and PREFIX.png")
    p.add_argument("file", type=Path, help="pipeline YAML file")
    p.add_argument("--out", required=True, type=Path, help="output prefix, e.g. `docs/pipeline`")
    p.set_defaults(handler=cmd_pipeline_draw)


# --------------------------------------------------------------------------- train / eval


def cmd_train(args: argparse.Namespace) -> int:
    from loragraph.adapters.registry import Registry
    from loragraph.training.config import load_train_config
    from loragraph.training.train import find_config, promote_if_better, train

    config = load_train_config(find_config(args.config))
    if args.promote == "if_better" and config.data.test is None:
        raise ConfigError("`--promote if_better` compares test scores: the config has no `data.test`")
    _set_threads(args.threads)
    version = train(config, resume=not args.no_resume)
    decision = None
    registry = Registry()
    if args.promote == "if_better":
        decision = promote_if_better(version, config, registry=registry)
    elif args.promote == "always" and registry.promoted(version.name).version != version.version:
        registry.promote(version.name, version.version)
    if args.json:
        out: dict[str, Any] = {"adapter": version.ref, "path": str(version.path), "metrics": version.manifest.metrics}
        if decision is not None:
            out["promotion"] = {"promoted": decision.promoted, "reason": decision.reason, "scores": decision.scores}
        _print_json(out)
    else:
        print(f"published {version.ref} at {version.path}")
        for key, value in version.manifest.metrics.items():
            print(f"  {key:<28}{value:.4f}")
        if decision is not None:
            print(decision.reason)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from loragraph.training.evaluation import evaluate_adapter, format_report

    report = evaluate_adapter(
        args.adapter,
        args.data,
        max_examples=args.max_examples,
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size,
        compare_base=not args.no_base,
    )
    if args.json:
        _print_json(report)
    else:
        print(format_report(report, errors=args.errors))
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train one adapter from its YAML config and publish a new version")
    p.add_argument(
        "config",
        help="a training YAML, or an adapter name of the sample (`intent` -> examples/customer_service/train/intent.yaml)",
    )
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming an interrupted run")
    p.add_argument(
        "--promote",
        choices=["never", "if_better", "always"],
        default="never",
        help="after publishing: `if_better` promotes the new version when it beats the promoted one on the test "
        "split (both scored now), `always` promotes it; default `never` (only a first version is promoted)",
    )
    p.add_argument("--json", action="store_true", help="print the new version and its metrics as JSON")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); on a busy shared CPU, 1 can be several times faster",
    )
    p.set_defaults(handler=cmd_train)
    p = sub.add_parser("eval", help="evaluate an adapter version on a JSONL file (generate: also the base alone)")
    p.add_argument("adapter", help="`name` (the promoted version) or `name@vN`")
    p.add_argument("--data", required=True, type=Path, help="JSONL file in the adapter kind's format")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-examples", type=int, default=None, help="evaluate only the first N examples")
    p.add_argument("--max-new-tokens", type=int, default=None, help="generate: tokens per answer (default: as trained)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="generate: as the stage field (default 1.0: off)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="generate: as the stage field (default 0: off)")
    p.add_argument("--no-base", action="store_true", help="generate: skip the base-alone comparison")
    p.add_argument("--errors", type=int, default=0, metavar="N", help="classify/tag: print the first N wrong examples with file:line (all are in --json)")
    p.set_defaults(handler=cmd_eval)


# --------------------------------------------------------------------------- adapters


def _registry(args: argparse.Namespace) -> Any:
    from loragraph.adapters.registry import Registry

    return Registry(args.registry)


def _version_summary(version: Any, promoted: int | None) -> dict[str, Any]:
    m = version.manifest
    return {
        "ref": version.ref,
        "kind": m.kind,
        "method": m.method,
        "promoted": version.version == promoted,
        "parent": m.parent,
        "labels": m.labels,
        "metrics": m.metrics,
        "base": m.base_name,
        "quantization": m.quantization,
        "created_at": m.created_at.isoformat(),
        "path": str(version.path),
    }


def cmd_adapters_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    rows: dict[str, Any] = {}
    for name in registry.names():
        promoted = registry.state(name).promoted
        rows[name] = {"promoted": promoted, "versions": [_version_summary(v, promoted) for v in registry.versions(name)]}
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no adapters in {registry.root}")
        return 0
    for row in rows.values():
        for v in row["versions"]:
            metrics = ", ".join(f"{k}={val:.3f}" for k, val in list(v["metrics"].items())[:3])
            mark = "*" if v["promoted"] else " "
            print(f"{mark} {v['ref']:<24} {v['kind']:<9} {v['method']:<8} {v['created_at'][:19]}  {metrics}")
    print("(* = promoted)")
    return 0


def cmd_adapters_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    version = registry.resolve(args.ref)
    data = {**_version_summary(version, registry.state(version.name).promoted), "manifest": version.manifest.model_dump(mode="json")}
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            if key != "manifest":
                print(f"{key:>13}: {value}")
        m = version.manifest
        print(f"{'fingerprint':>13}: {m.base_fingerprint}")
        if m.threshold is not None:
            print(f"{'threshold':>13}: {m.threshold:.3f} (guardrail: flags at or above this probability; chosen at training)")
        if m.prompt:
            print(f"{'prompt':>13}: {m.prompt!r}")
        if m.system:
            print(f"{'system':>13}: {m.system!r}")
        if m.hyperparameters:
            print(f"{'training':>13}: {json.dumps(m.hyperparameters, default=str)}")
        for filename, digest in m.files.items():
            print(f"{'file':>13}: {filename}  sha256:{digest[:16]}...")
    return 0


def cmd_adapters_promote(args: argparse.Namespace) -> int:
    from loragraph.adapters.registry import parse_ref

    name, number = parse_ref(args.ref)
    if number is None:
        raise ConfigError(f"`promote` needs a pinned version like `{name}@v2`, got {args.ref!r}")
    version = _registry(args).promote(name, number)
    print(f"promoted {version.ref}")
    return 0


def cmd_adapters_rollback(args: argparse.Namespace) -> int:
    version = _registry(args).rollback(args.name)
    print(f"rolled back {args.name} to {version.ref}")
    return 0


def cmd_adapters_verify(args: argparse.Namespace) -> int:
    registry = _registry(args)
    version = registry.verify(args.ref)
    print(f"ok {version.ref}: {len(version.manifest.files)} files match their sha256")
    return 0


def _add_adapters(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry", type=Path, default=None, help="registry root (default $LORAGRAPH_HOME/adapters)"
    )
    adapters = sub.add_parser("adapters", help="list, inspect, promote, roll back and verify published adapters")
    asub = adapters.add_subparsers(dest="adapters_command", required=True)
    p = asub.add_parser("list", parents=[common], help="every adapter version (* marks the promoted one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_adapters_list)
    p = asub.add_parser("show", parents=[common], help="manifest of one version")
    p.add_argument("ref", help="`intent` (promoted version), `intent@v3` or `intent@3`")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_adapters_show)
    p = asub.add_parser("promote", parents=[common], help="make a version the one the adapter name resolves to")
    p.add_argument("ref", help="pinned version, `intent@v3`")
    p.set_defaults(handler=cmd_adapters_promote)
    p = asub.add_parser("rollback", parents=[common], help="promote again the version promoted before")
    p.add_argument("name", help="adapter name, `intent`")
    p.set_defaults(handler=cmd_adapters_rollback)
    p = asub.add_parser("verify", parents=[common], help="check a version's files against their sha256 checksums")
    p.add_argument("ref", help="`intent` (promoted version) or `intent@v3`")
    p.set_defaults(handler=cmd_adapters_verify)


# --------------------------------------------------------------------------- serve / feedback (api room)


def _build_routers(args: argparse.Namespace) -> dict[str, Any]:
    registry: Any = None
    if not args.echo or args.echo_registry:
        from loragraph.adapters.registry import Registry

        registry = Registry(args.registry)
    routers: dict[str, Any] = {}
    bases: dict[Any, Any] = {}  # pipelines on the same base share ONE loaded base (and its adapters)
    for path in args.pipelines:
        if args.echo:
            from loragraph.testing import EchoRouter

            router: Any = EchoRouter.from_yaml(
                path, registry=registry,
                delay_s=args.echo_delay, fail_stage=args.echo_fail_stage,
            )
        else:
            from loragraph.adapters.base import load_base
            from loragraph.pipelines.spec import load_pipeline
            from loragraph.router.router import Router

            spec = load_pipeline(path)
            if spec.base not in bases:
                bases[spec.base] = load_base(spec.base)
            router = Router.from_yaml(path, registry=registry, base=bases[spec.base])
        if router.name in routers:
            raise UserError(f"two pipelines are named `{router.name}`", where=str(path))
        routers[router.name] = router
    return routers


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from loragraph.api import ApiSettings, create_app

    settings = ApiSettings.from_env(
        db_path=args.db,
        registry_root=args.registry,
        api_keys=args.api_key or None,
        admin_keys=args.admin_key or None,
        workers=args.workers,
        max_batch=args.max_batch,
        queue_size=args.queue_size,
        run_timeout_s=args.run_timeout,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024) if args.max_body_mb else None,
    )
    routers = _build_routers(args)
    kind = "EchoRouter test double" if args.echo else "Router"
    print(f"serving {', '.join(routers)} ({kind}) on http://{args.host}:{args.port} ; store {settings.resolved_db_path}")
    uvicorn.run(create_app(routers, settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from loragraph.api import ApiSettings, Store, export_feedback

    db = ApiSettings.from_env(db_path=args.db).resolved_db_path
    if not db.is_file():
        raise UserError(f"no API store at `{db}`; pass `--db` or set `LORAGRAPH_DB`")
    spec = None
    if args.pipeline is not None:
        from loragraph.pipelines.spec import load_pipeline

        spec = load_pipeline(args.pipeline)
        if args.stage not in spec.stages:
            raise UserError(f"`--stage` `{args.stage}` is not a stage of pipeline `{spec.name}`", where=str(args.pipeline))
    store = Store(db)
    try:
        summary = export_feedback(store.iter_feedback(args.stage, spec=spec), args.out)
    finally:
        store.close()
    print(
        f"stage `{args.stage}`: {summary.sft} SFT example(s) -> {summary.sft_path}, "
        f"{summary.pairs} preference pair(s) -> {summary.pairs_path}, {summary.skipped} feedback item(s) skipped"
    )
    return 0


def _add_api(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve pipelines over HTTP (Litestar API + playground at /)")
    p.add_argument("pipelines", nargs="+", type=Path, metavar="PIPELINE.yaml", help="pipeline YAML file(s)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--db", type=Path, default=None, help="SQLite store (default $LORAGRAPH_HOME/loragraph.db)")
    p.add_argument("--registry", type=Path, default=None, help="adapter registry root (default $LORAGRAPH_HOME/adapters)")
    p.add_argument("--api-key", action="append", default=[], help="user key (repeatable; or env LORAGRAPH_API_KEYS)")
    p.add_argument("--admin-key", action="append", default=[],
                   help="admin key for promote/rollback (repeatable; or env LORAGRAPH_ADMIN_KEYS); none = disabled")
    p.add_argument("--workers", type=int, default=None, help="threads running pipelines (default 2)")
    p.add_argument("--max-batch", type=int, default=None, help="most waiting runs handed to `run_many` at once (default 8)")
    p.add_argument("--queue-size", type=int, default=None, help="interactive runs that may wait; more get 503 (default 64)")
    p.add_argument("--run-timeout", type=float, default=None, help="per-run deadline in seconds (default 60)")
    p.add_argument("--max-body-mb", type=float, default=None, help="largest request body in MiB (default 10)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--echo", action="store_true",
                   help="serve the EchoRouter test double (stages read from the YAML, no weights) to try the API")
    p.add_argument("--echo-delay", type=float, default=0.0, help="with --echo: seconds each run takes")
    p.add_argument("--echo-fail-stage", default=None, help="with --echo: this stage fails on every run")
    p.add_argument("--echo-registry", action="store_true", help="with --echo: resolve adapters in the registry")
    p.set_defaults(handler=cmd_serve)

    fb = sub.add_parser("feedback", help="turn feedback stored by the API into training data")
    fsub = fb.add_subparsers(dest="feedback_command", required=True)
    p = fsub.add_parser("export", help="write DIR/sft.jsonl and DIR/pairs.jsonl for one stage")
    p.add_argument("--stage", required=True, help="stage name, e.g. `summary`")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--db", type=Path, default=None, help="SQLite store (default $LORAGRAPH_HOME/loragraph.db)")
    p.add_argument("--pipeline", type=Path, default=None,
                   help="the pipeline YAML, for exact prompt contexts (a generate stage's `inputs`)")
    p.set_defaults(handler=cmd_feedback_export)


# --------------------------------------------------------------------------- guardrails


def cmd_guardrails_data(args: argparse.Namespace) -> int:
    from loragraph.guardrails.data import build_guardrail_data

    summary = build_guardrail_data(args.out, seed=args.seed, sample_dir=args.sample)
    if args.json:
        _print_json(summary)
    else:
        for name, part in summary.items():
            splits = ", ".join(f"{k} {v['rows']} {v['labels']}" for k, v in part["splits"].items())
            print(f"{name}: {args.out / name}  ({splits})")
    return 0


def cmd_guardrails_eval(args: argparse.Namespace) -> int:
    from loragraph.guardrails.evaluate import evaluate_guardrail, format_report

    report = evaluate_guardrail(
        args.adapter,
        args.data,
        threshold=args.threshold,
        choose_on=args.choose_on,
        max_fpr=args.max_fpr,
        fpr_on=[k.strip() for k in args.fpr_on.split(",") if k.strip()] if args.fpr_on is not None else None,
        thresholds=args.thresholds,
        review_threshold=args.review_threshold,
        flag_labels=args.flag_labels.split(",") if args.flag_labels else None,
    )
    if args.json:
        _print_json(report.model_dump())
    else:
        print(format_report(report))
    return 0


def _add_guardrails(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    g = sub.add_parser("guardrails", help="build guardrail data sets and measure guardrail adapters")
    gsub = g.add_subparsers(dest="guardrails_command", required=True)
    p = gsub.add_parser("data", help="build the input (safe/attack) and output (safe/toxic/pii_leak) data sets")
    p.add_argument("--out", required=True, type=Path, help="folder; writes <out>/input and <out>/output splits")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, filling and splitting (default 0)")
    p.add_argument("--sample", type=Path, default=None, help="folder written by `loragraph data sample` (adds its customer messages and replies)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_guardrails_data)
    p = gsub.add_parser("eval", help="TPR/FPR of a guardrail adapter, overall and per language")
    p.add_argument("adapter", help="`name` (the promoted version) or `name@vN`")
    p.add_argument("--data", required=True, type=Path, help="a split written by `loragraph guardrails data` (e.g. .../input/test.jsonl)")
    p.add_argument("--threshold", type=float, default=None, help="flagged probability at or above which a text is flagged (default: the one stored with the version, else 0.5)")
    p.add_argument("--choose-on", type=Path, default=None, help="choose the threshold on this (validation) file instead")
    p.add_argument("--max-fpr", type=float, default=0.03, help="with --choose-on: the largest FPR allowed (default 0.03)")
    p.add_argument("--fpr-on", default=None, help="with --choose-on: comma-separated kinds of safe rows whose FPR counts "
                   "(customer, look-alike, document, composed, other; default: every safe row)")
    p.add_argument("--thresholds", type=_threshold_list, default=(), help="comma-separated extra thresholds to report (e.g. 0.05,0.2,0.5)")
    p.add_argument("--review-threshold", type=float, default=None,
                   help="also report what a step with this review band does (policy / a human / answered), "
                   "as a pipeline step's `review_threshold`; below the threshold in use")
    p.add_argument("--flag-labels", default=None, help="comma-separated flagged labels (default: every label but `safe`)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_guardrails_eval)


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from loragraph.router.batch import run_file
    from loragraph.router.router import Router

    if not Path(args.input).is_file():
        raise NotFoundError("no such input file", where=args.input)
    router = Router.from_yaml(args.pipeline, adapters=_stage_adapters(args.adapter))
    summary = run_file(router, args.input, args.output, batch_size=args.batch_size)
    first, *rest = summary.lines()
    print(f"{args.output}: {first}")
    for line in rest:
        print(f"  {line}")
    return 0 if summary.statuses.get("error", 0) == 0 else 3


def _stage_adapters(pairs: list[str] | None) -> dict[str, str]:
    """`--adapter STAGE=REF` options -> {stage: adapter reference}."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        stage, sep, ref = pair.partition("=")
        if not sep or not stage.strip() or not ref.strip():
            raise InputError(f"`--adapter` takes STAGE=ADAPTER (e.g. reply=reply@v2), got {pair!r}")
        out[stage.strip()] = ref.strip()
    return out


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="run a pipeline over a JSONL file of documents")
    p.add_argument("pipeline", help="pipeline YAML file")
    p.add_argument("--input", "-i", required=True, help='JSONL, one {"id", "text"} per line')
    p.add_argument("--output", "-o", required=True, help="JSONL of run results (stage outputs + trace)")
    p.add_argument("--batch-size", type=int, default=8, help="documents walked through the graph together (default 8)")
    p.add_argument(
        "--adapter",
        action="append",
        metavar="STAGE=ADAPTER",
        help="use this adapter (`reply@v2`, `reply`) for a stage instead of the file's, for this run only; "
        "repeatable. Compare two versions by running twice: the summary counts each guardrail's failures",
    )
    p.set_defaults(handler=cmd_run)


# --------------------------------------------------------------------------- data


def cmd_data_sample(args: argparse.Namespace) -> int:
    from loragraph.training.sample import generate_sample, parse_sizes

    manifest = generate_sample(args.out, seed=args.seed, sizes=parse_sizes(args.size))
    if args.json:
        _print_json(manifest)
        return 0
    for name, info in manifest["datasets"].items():
        counts = ", ".join(f"{split} {s['count']}" for split, s in info["splits"].items())
        print(f"{name + ' (' + info['kind'] + ')':<24} {counts}")
    if "documents" in manifest:
        print(f"{'documents':<24} {manifest['documents']['count']}")
    print(f"wrote {args.out} (seed {args.seed}); counts per label and style in manifest.json")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from loragraph.training.data import check_splits, load_examples

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    loaded = []
    for i, path in enumerate(args.files):
        data = load_examples(
            path,
            args.kind,
            labels=labels,
            skip_invalid=args.skip_invalid,
            min_per_label=args.min_per_label if i == 0 else 0,
            allow_duplicates=args.allow_duplicates,
        )
        loaded.append(data)
        found = data.labels()
        extra = f", {len(found)} label(s): {', '.join(found)}" if found else ""
        print(f"{path}: {len(data)} valid {args.kind} example(s){extra}; sha256 {data.data_hash[:12]}")
        for problem in data.skipped:
            print(f"  skipped {problem}", file=sys.stderr)
    leaks = check_splits(*loaded[:3], raise_errors=False) if len(loaded) > 1 else []
    for problem in leaks:
        print(f"  leakage {problem}", file=sys.stderr)
    if leaks:
        return 2
    return 3 if any(d.skipped for d in loaded) else 0


def _add_data(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from loragraph.training.data import DEFAULT_MIN_PER_LABEL, KINDS

    data = sub.add_parser("data", help="generate the sample data set and validate training data")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("sample", help="write the reproducible sample customer-service data set")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files (default 0)")
    p.add_argument(
        "--size",
        default="default",
        help="preset `default` | `small` | `tiny`, then optional key=value overrides, e.g. `small,intent=300` "
        "(keys: intent, entities, summary, reply, reply_pairs, documents, eval_fraction)",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=cmd_data_sample)
    p = dsub.add_parser(
        "validate",
        help="check JSONL training data; every problem names file:line and the field "
        "(several files = train, validation, test: also checks leakage between them)",
    )
    p.add_argument("files", nargs="+", type=Path, help="JSONL file(s): train [validation [test]]")
    p.add_argument("--kind", required=True, choices=KINDS, help="data kind")
    p.add_argument("--labels", help="comma-separated allowed labels (classify) or entity types (tag)")
    p.add_argument("--skip-invalid", action="store_true", help="report broken lines and go on (exit 3) instead of failing")
    p.add_argument("--min-per-label", type=int, default=DEFAULT_MIN_PER_LABEL, help=f"classify: least examples per label in the first file (default {DEFAULT_MIN_PER_LABEL}; 0 = off)")
    p.add_argument("--allow-duplicates", action="store_true", help="do not treat repeated examples as errors")
    p.set_defaults(handler=cmd_data_validate)


# --------------------------------------------------------------------------- parser

_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = [  # type: ignore[type-arg]
    _add_data,
    _add_run,
    _add_pipeline,
    _add_base,
    _add_api,
    _add_adapters,
    _add_align,
    _add_train,
    _add_guardrails,
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

