"""The `cnnlab` command: a thin layer over the Python API. Every Config field is a `train` flag."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import typing
from typing import Any, Literal

from .errors import CnnlabError, Interrupted


def print_error(message: str) -> None:
    # file names that are not valid UTF-8 arrive as surrogate escapes: print them escaped, don't crash
    print(f"error: {message.encode('utf-8', 'backslashreplace').decode('utf-8')}", file=sys.stderr)


# torchrun reads abbreviations of its own options anywhere on its command line, so `torchrun ... -m cnnlab
# train --log mlflow` is refused as ambiguous (--log-dir, --logs-specs): --logger is the same flag
ALIASES = {"log": ("--logger",)}
DEFAULT_PRESET = "fast"  # when neither --preset, a --config file nor a sweep file gives one


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .config import Config, config_help

    hints, helps = typing.get_type_hints(Config), config_help()
    group = parser.add_argument_group("config (defaults: the chosen preset)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": helps[f.name]}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
        else:
            kwargs["type"] = str  # converted and checked by parse_config, which names the key on error
            kwargs["metavar"] = kind.__name__.upper()
        group.add_argument(flag, *ALIASES.get(f.name, ()), **kwargs)


def _explicit_keys(args: argparse.Namespace) -> set[str]:
    """The config keys the user chose: flags given, and every key of a --config file."""
    from .config import Config

    names = {f.name for f in dataclasses.fields(Config)}
    keys = {k for k in vars(args) if k in names}
    if getattr(args, "config", None):
        keys |= names
    return keys


def _config_from_args(args: argparse.Namespace):
    from .config import Config, load_config_file, parse_config
    from .presets import PRESETS, preset

    names = {f.name for f in dataclasses.fields(Config)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    # --preset given with --config: the preset's values over the file's; neither given: the fast preset
    base = load_config_file(args.config).to_dict() if args.config else preset(args.preset or DEFAULT_PRESET).to_dict()
    if args.config and args.preset is not None:
        base = {**base, **PRESETS[args.preset]}
    return parse_config({**base, **overrides}).resolved()


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed

    finished = False
    try:
        code = _train(args)
        finished = True
        return code
    finally:  # under torchrun: leave the process group (together when every rank got here); one process: nothing
        distributed.shutdown(together=finished)


def _train(args: argparse.Namespace) -> int:
    from .distributed import is_main
    from .pipeline import resume_run, train_run

    if args.resume:
        metrics = resume_run(args.resume)
        out = args.resume
        if not is_main():  # under torchrun, rank 0 reports
            return 0
        if "test" in metrics:
            print(f"test accuracy: {100 * metrics['test']['accuracy']:.2f}% ({metrics['test']['n']} images)")
        print(f"run saved in {out}")
        return 0
    cfg = _config_from_args(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    out = args.out or f"runs/{args.preset or DEFAULT_PRESET}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = train_run(cfg, out, keep=_explicit_keys(args))
    if not is_main():
        return 0
    if "test" in metrics:
        print(
            f"test accuracy: {100 * metrics['test']['accuracy']:.2f}% "
            f"({metrics['test']['n']} images); training {metrics['train_time_s']:.1f}s"
        )
    print(f"run saved in {out}")
    return 0


def _apply_sweep_file(args: argparse.Namespace) -> None:
    """A TOML sweep file: preset, seeds, [config] values and [grid] lists; flags on the command line win."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(args.sweep_file, "rb") as fh:
            spec = tomllib.load(fh)
    except FileNotFoundError:
        raise CnnlabError(f"{args.sweep_file}: sweep file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise CnnlabError(f"{args.sweep_file}: not valid TOML ({exc})") from None
    unknown = set(spec) - {"preset", "seeds", "config", "grid"}
    if unknown:
        raise CnnlabError(
            f"{args.sweep_file}: unknown key(s) {', '.join(sorted(unknown))}; use preset, seeds, [config] and [grid]"
        )
    if "preset" in spec and args.preset is None:
        args.preset = spec["preset"]
    if "seeds" in spec and args.seeds_default:
        args.seeds = spec["seeds"]
    for key, value in spec.get("config", {}).items():
        if not hasattr(args, key):
            setattr(args, key, value)
    grid = spec.get("grid", {})
    if isinstance(grid, str):
        items = [grid]
    else:
        items = [f"{k}={','.join(map(str, v if isinstance(v, list) else [v]))}" for k, v in grid.items()]
    args.grid = items + (args.grid or [])


def _sweep_storage(storage: str | None) -> str | None:
    """--storage, else the URL in STORAGE_ENV; warns when the password is on the command line."""
    from .studies import STORAGE_ENV, has_password

    if has_password(storage):
        print(
            f"warning: a password in --storage is visible to every user of this machine (ps); put the URL in "
            f"{STORAGE_ENV} or the password in PGPASSWORD / ~/.pgpass instead",
            file=sys.stderr,
        )
    return storage or os.environ.get(STORAGE_ENV) or None


def _sweep_worker(args: argparse.Namespace) -> int:
    """`cnnlab sweep --worker`: work on an existing sweep (or search) until it has nothing left."""
    import torch

    from .sweep import work_together, worker_devices, worker_threads

    if not args.out and not args.storage:
        raise CnnlabError("--worker needs --out SWEEP_DIR of an existing sweep, or --storage URL")
    out = args.out or "sweeps/worker"
    own = getattr(args, "device", None)  # --device: this worker's (how a sweep starts its helpers)
    placed = (
        [own] * args.workers
        if own and not args.devices
        else worker_devices(args.workers, args.devices, torch.cuda.device_count())
    )
    work_together(
        out,
        args.workers,
        placed,
        worker_threads(int(getattr(args, "threads", 0) or 0), args.workers),
        progress=False,
        storage=args.storage,
        study_name=args.study,
    )
    return 0


def _sweep_search(args: argparse.Namespace, cfg) -> int:
    """`cnnlab sweep --search tpe`: an Optuna TPE search over --param ranges."""
    from .search import format_search, parse_space, run_search
    from .studies import adapt_study, selection

    space = parse_space(args.param or [], cfg)
    cfg, adapted = adapt_study(cfg, _explicit_keys(args) | set(space), [])  # as `cnnlab train`, once
    metric, why = selection(cfg, args.select_metric)
    if args.dry_run:
        print(
            "\n".join(
                [*adapted, f"TPE search over {', '.join(space)}: {args.trials} trials, median pruning on {metric}", why]
            )
        )
        return 0
    if not args.out:
        raise CnnlabError("--out SWEEP_DIR is required (re-running the same command resumes it)")
    print("\n".join([*adapted, why]))
    res = run_search(
        args.out,
        cfg,
        space,
        args.trials,
        storage=args.storage,
        study_name=args.study,
        progress=cfg.progress,
        select_metric=metric,
    )
    print(format_search(res))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    args.seeds_default = args.seeds is None
    args.seeds = 3 if args.seeds is None else args.seeds
    from .studies import adapt_study, selection
    from .sweep import Workers, check_data, describe_plan, format_table, parse_grid, plan, run_sweep
    from .sweep.planning import cells_of

    args.storage = _sweep_storage(args.storage)
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        raise CnnlabError("cnnlab sweep starts its own workers (--workers N, --devices); run it without torchrun")
    if args.worker:
        return _sweep_worker(args)
    if args.sweep_file:
        _apply_sweep_file(args)
    cfg = _config_from_args(args)
    if args.search == "tpe":
        return _sweep_search(args, cfg)
    grid = parse_grid(args.grid or [], cfg)
    # adapted once, as `cnnlab train` adapts a run, keeping the keys given and swept
    cfg, adapted = adapt_study(cfg, _explicit_keys(args) | set(grid), cells_of(grid))
    units, reason = plan(cfg, grid, args.seeds)
    check_data(cfg, grid)
    metric, why = selection(cfg, args.select_metric)
    if args.dry_run:
        print("\n".join([*adapted, describe_plan(units, reason), why]))
        return 0
    if not args.out:
        raise CnnlabError("--out SWEEP_DIR is required (re-running the same command resumes it)")
    print("\n".join([*adapted, describe_plan(units, reason), why]))
    workers = Workers(args.workers, args.devices, args.storage, args.study)
    res = run_sweep(args.out, cfg, grid, args.seeds, workers, progress=cfg.progress, select_metric=metric)
    print(format_table(res))
    print(f"results in {args.out}: results.csv, results.json" + (", heatmap.png" if len(grid) == 2 else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    start = time.perf_counter()
    md_path, html_path = build_report(args.dir)
    print(f"wrote {md_path} and {html_path} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import summary_lines
    from .pipeline import evaluate_run

    exclude = None
    if args.exclude_duplicates:
        from .check.output import twinned_test_images

        checked, exclude = twinned_test_images(args.exclude_duplicates)
        print(f"{args.exclude_duplicates}: {len(exclude)} test image(s) of {checked} have a twin outside test/")
    metrics = evaluate_run(args.run_dir, args.data, exclude, args.tta_share)
    if args.tta_share is not None:
        print(
            f"test-time views for the least confident {100 * metrics['tta_share']:g}% of each batch (--tta-share)"
            if metrics["tta"]
            else "note: the run has no test-time augmentation; --tta-share changes nothing"
        )
    print("\n".join(summary_lines(metrics)))
    if exclude is not None:
        kept = metrics["without_excluded"]
        print(
            f"without the {kept['excluded']} test image(s) that have a twin outside test/: accuracy "
            f"{100 * kept['accuracy']:.2f}% on {kept['n']} images (all: {100 * metrics['accuracy']:.2f}% on {metrics['n']})"
        )
        if kept["excluded"] < len(exclude):
            print(
                f"note: {len(exclude) - kept['excluded']} of those are not in the evaluated test split ({checked} checked)"
            )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import collect_images, load

    predictor = load(args.run_dir, batch_size=args.batch_size, precision=args.precision)
    results = predictor.predict_files(collect_images(args.images))
    failed = [r for r in results if r.error]
    for r in failed:
        print_error(r.error)
    good = [r for r in results if not r.error]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "file": r.source,
                        "top": [
                            {"class": c, "probability": round(p, 6)} for c, p in r.top(predictor.classes, args.top_k)
                        ],
                    }
                    if not r.error
                    else {"file": r.source, "error": r.error}
                    for r in results
                ],
                indent=1,
            )
        )
    else:
        for r in good:
            top = ", ".join(f"{c} {100 * p:.1f}%" for c, p in r.top(predictor.classes, args.top_k))
            print(f"{r.source}: {top}")
    if args.explain:  # the answers first, then the pictures of them
        from .explain import explain_files

        written = explain_files(
            predictor, [r.source for r in good], [r.probabilities for r in good], args.explain, args.cam_layer
        )
        print(f"wrote {len(written)} Grad-CAM picture(s) to {args.explain}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) could not be read", file=sys.stderr)
        return 2
    return 0


def cmd_interpret(args: argparse.Namespace) -> int:
    from .interpret import interpret_run, write_interpretation

    result = interpret_run(args.run_dir, args.top, args.data, args.cam_layer)
    json_path, html_path = write_interpretation(result, args.out or args.run_dir)
    for item in result.top_losses[:5]:
        print(
            f"{item.file or f'row {item.row}'}: true {item.true_class} ({100 * item.true_probability:.1f}%), "
            f"predicted {item.predicted_class} ({100 * item.predicted_probability:.1f}%)"
        )
    print(f"wrote {json_path} and {html_path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .config import saved_config
    from .predict import export
    from .runs import CONFIG, load_run

    out = export(args.run_dir, args.out, args.format)
    run = load_run(args.run_dir)  # what the graph takes and gives, in the run's own terms
    height, width = run["data"]["preprocessing"]["image_size"]
    print(
        f"wrote {out}: input uint8 RGB images (N, {height}, {width}, 3), output the probabilities (N, "
        f"{len(run['data']['classes'])}) of the classes in {os.path.join(args.run_dir, CONFIG)}'s data.classes"
    )
    cfg = saved_config(run["config"])
    if cfg.tta and cfg.tta_share < 1:
        print(
            f"note: the exported model gives every image the test-time augmentation views; the run's tta_share "
            f"{cfg.tta_share:g} (the least confident of each batch) is left out of a traced graph"
        )
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import load_dataset
    from .data.dataset import classes_without_validation

    ds = load_dataset(
        args.path,
        val_fraction=args.val_fraction,
        split=args.split,
        seed=args.split_seed,
        progress=not args.quiet,
        strict_val=False,
    )
    print("\n".join(ds.named_found_lines()))
    print(ds.split_rule)
    print(f"classes: {', '.join(ds.classes)}")
    labels = ds.train.labels if ds.val is None else np.concatenate([ds.train.labels, ds.val.labels])
    counts = np.bincount(labels, minlength=len(ds.classes))
    print("images per class (training + validation): " + ", ".join(f"{c} {n}" for c, n in zip(ds.classes, counts)))
    _print_imbalance(ds)
    short = classes_without_validation(labels, ds.classes, args.val_fraction)
    if short:
        print(
            f"warning: --val-fraction {args.val_fraction} gives no validation images to {len(short)} class(es): "
            f"{', '.join(short)} (fewer than {math.ceil(1 / args.val_fraction)} images each); training needs a "
            "larger --val-fraction, more images, or --val-fraction 0"
        )
    height, width, channels = ds.image_shape
    print(f"image size: {height}x{width}x{channels} (uint8)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .check import CheckOptions, format_table, run_check, write_outputs
    from .check.output import check_out

    out = args.out or f"data-check-{time.strftime('%Y%m%d-%H%M%S')}"
    check_out(out)
    options = CheckOptions(
        min_size=args.min_size,
        val_fraction=args.val_fraction,
        split=args.split,
        seed=args.split_seed,
        workers=args.workers,
        progress=not args.quiet,
        label_run=args.label_issues,
        features_run=args.features,
    )
    if args.threshold is not None:
        options.threshold = args.threshold
    if args.similarity is not None:
        options.similarity = args.similarity
    result = run_check(args.path, options)
    print(format_table(result))
    json_path, html_path = write_outputs(result, out)
    print(f"wrote {json_path} and {html_path}")
    return 1 if args.strict and result.leaks else 0


def _print_imbalance(ds) -> None:
    """The training split's per-class counts when it has a validation split beside, its imbalance ratio,
    and a warning above adaptation.IMBALANCE_RATIO (what training then does)."""
    from .adaptation import IMBALANCE_DEFAULT, IMBALANCE_RATIO, imbalance_ratio
    from .data.loader import class_counts

    counts = class_counts(ds.train.labels, len(ds.classes))
    if ds.val is not None:
        print("images per class (training split): " + ", ".join(f"{c} {n}" for c, n in zip(ds.classes, counts)))
    ratio = imbalance_ratio(counts)
    print(f"imbalance ratio (largest / smallest class, training split): {ratio:.1f}")
    if ratio > IMBALANCE_RATIO:
        key, value = IMBALANCE_DEFAULT
        print(
            f"warning: imbalanced classes (ratio above {IMBALANCE_RATIO:g}): plain accuracy can look good while "
            f"the smallest classes are missed; `cnnlab train` sets --{key.replace('_', '-')} {value} unless "
            "--class-weight, --sampler or --no-adapt is given; judge by balanced accuracy or macro-F1"
        )


def cmd_data_get(args: argparse.Namespace) -> int:
    from .data.cifar import get_cifar10, get_cifar10_folders

    if args.name != "cifar10":
        raise CnnlabError(f"unknown dataset {args.name!r}; known: cifar10")
    if args.batches:
        folder, layout = get_cifar10(args.dir, archive=args.archive), "the python batches"
    else:
        folder = get_cifar10_folders(args.dir, archive=args.archive)
        layout = "train/<class>/*.png, and test/<class>/*.png: the whole 10,000-image test set"
    print(f"CIFAR-10 ready in {folder} ({layout}); train with: cnnlab train --data {folder}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .data.decode import cache_dir, cache_entries, cache_limit, clear_cache

    if args.cache_command == "clear":
        files, size = clear_cache()
        print(f"removed {files} file(s), {size / 1e9:.2f} GB, from {cache_dir()}")
        return 0
    entries = cache_entries()
    total = sum(size for _, size, _ in entries)
    print(f"decode cache: {cache_dir()} (CNNLAB_CACHE)")
    print(
        f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {total / 1e9:.2f} GB of "
        f"{cache_limit() / 1e9:.1f} GB allowed (CNNLAB_CACHE_GB); least recently used are evicted first"
    )
    for path, size, used in reversed(entries):
        print(
            f"  {os.path.basename(path)}  {size / 1e6:9.1f} MB  last used {time.strftime('%Y-%m-%d %H:%M', time.localtime(used))}"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models import count_params, create_model, default_input_size, list_models

    print(f"{'model':<16}{'input':>8}{'params':>14}")
    for name in list_models():
        size = default_input_size(name)
        print(f"{name:<16}{f'{size}x{size}':>8}{count_params(create_model(name))['total']:>14,}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .models import create_model, default_input_size, summary

    model = create_model(args.model, num_classes=args.num_classes)
    print(summary(model, args.input_size or default_input_size(args.model)))
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from .lrfind import LrSweep, lr_find_run

    sweep = LrSweep(start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    cfg = _config_from_args(args)
    out = args.out or f"runs/lr-find-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = lr_find_run(cfg, out, sweep, keep=_explicit_keys(args))
    res = run.result
    print(f"{len(res.lrs)} steps, lr {res.lrs[0]:.3g} to {res.lrs[-1]:.3g} ({res.stop_reason}); {res.time_s:.1f}s")
    if res.suggestion is None:
        print(res.rule)
    else:
        values = ", ".join(f"{k} {v:.3g} (config: {getattr(run.cfg, k):.3g})" for k, v in run.suggested().items())
        print(f"suggested {values}")
        print(f"rule: {res.rule}")
    print(f"wrote {', '.join(run.files)}")
    return 0


def _add_train(sub) -> None:
    """`cnnlab train`."""
    from .presets import PRESETS

    p = sub.add_parser("train", help="train a model; writes a run directory")
    p.add_argument("--preset", choices=list(PRESETS), default=None, help=f"named config (default: {DEFAULT_PRESET})")
    p.add_argument("--config", help="JSON config file (a run's config.json 'config' object works)")
    p.add_argument("--out", help="new run directory (default: runs/<preset>-<time>)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)


def _add_sweep(sub) -> None:
    """`cnnlab sweep` (grids, searches, workers)."""
    from .presets import PRESETS

    p = sub.add_parser("sweep", help="grid of config values x seeds, with statistics; resumable")
    p.add_argument("--preset", choices=list(PRESETS), default=None, help=f"named config (default: {DEFAULT_PRESET})")
    p.add_argument("--config", help="JSON config file for the values not in the grid")
    p.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2|seed-grid",
        help="a config key and its values (repeat for more keys); seed-grid = the study's 3x3 grid",
    )
    p.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 3)")
    p.add_argument("--sweep-file", metavar="FILE.toml", help="preset, seeds, [config] and [grid] from a TOML file")
    p.add_argument(
        "--search",
        choices=["grid", "tpe"],
        default="grid",
        help="grid: every cell x seed; tpe: Optuna's TPE sampler with median pruning",
    )
    p.add_argument("--trials", type=int, default=20, help="trials of a --search tpe (default 20)")
    p.add_argument(
        "--param",
        action="append",
        metavar="KEY=A,B|KEY=LOW..HIGH[:log]",
        help="a dimension of the --search tpe space (repeat for more)",
    )
    p.add_argument(
        "--select-metric",
        choices=["val_accuracy", "val_balanced_accuracy", "val_macro_f1"],
        help="validation metric the cells (trials) are compared on; never the test split (default: "
        "val_accuracy, or val_balanced_accuracy when the training classes are imbalanced, "
        "largest/smallest count above 3)",
    )
    p.add_argument("--out", help="sweep directory; re-running the same command resumes it")
    p.add_argument("--dry-run", action="store_true", help="print the trainings and the cells each serves")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on this machine, cores shared; worker i on cuda:i when there are as many GPUs",
    )
    p.add_argument(
        "--devices",
        metavar="0,1,...",
        help="the workers' devices, worker i on the i-th (in turn): GPU "
        "numbers, cuda:N or cpu; recorded in each run's config",
    )
    p.add_argument("--worker", action="store_true", help="join an existing sweep (in --out or --storage) as a worker")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="database for the Optuna study (e.g. postgresql://user@host/db, "
        "password in PGPASSWORD or ~/.pgpass), shared by workers on several machines; default: "
        "$CNNLAB_STORAGE, else SWEEP_DIR/optuna.journal",
    )
    p.add_argument("--study", default="cnnlab", help="study name inside --storage (one per sweep; default cnnlab)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_sweep)


def _add_report(sub) -> None:
    """`cnnlab report`."""
    p = sub.add_parser("report", help="write report.md and a self-contained report.html for a run or a sweep")
    p.add_argument("dir", metavar="RUN_OR_SWEEP_DIR")
    p.set_defaults(func=cmd_report)


def _add_evaluate(sub) -> None:
    """`cnnlab evaluate`."""
    p = sub.add_parser("evaluate", help="test accuracy of a finished run")
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset to evaluate on (default: the run's)")
    p.add_argument(
        "--exclude-duplicates",
        metavar="CHECK_JSON",
        help="a data_check.json of `cnnlab data check`: also give the figures without the test images that "
        "have a duplicate or near-duplicate outside test/ (as ciFAIR does)",
    )
    p.add_argument(
        "--tta-share",
        type=str,
        metavar="SHARE",
        help="give the test-time views to this share of each batch, the least confident images, in (0, 1] "
        "(default: the run's tta_share)",
    )
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub) -> None:
    """`cnnlab predict`."""
    p = sub.add_parser("predict", help="classify images with a finished run")
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=3, help="classes to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of lines")
    p.add_argument("--batch-size", type=int, default=0, help="images per step (default: the run's eval batch size)")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=None,
        help="default: the run's (as `cnnlab evaluate` computes here); exports are always fp32",
    )
    p.add_argument("--explain", metavar="DIR", help="also write each image's Grad-CAM maps (top two classes) to DIR")
    p.add_argument(
        "--cam-layer",
        metavar="NAME",
        help="module whose maps Grad-CAM reads (default: the last "
        "non-pooling 4-D map larger than 1x1; docs/interpret.md)",
    )
    p.set_defaults(func=cmd_predict)


def _add_interpret(sub) -> None:
    """`cnnlab interpret`."""
    p = sub.add_parser("interpret", help="the test images with the highest loss, confused pairs, Grad-CAM maps")
    p.add_argument("run_dir")
    p.add_argument("--top", type=int, default=24, help="images to show (default 24)")
    p.add_argument("--out", help="folder for interpret.json and interpret.html (default: the run directory)")
    p.add_argument("--data", help="dataset to interpret on (default: the run's)")
    p.add_argument(
        "--cam-layer",
        metavar="NAME",
        help="module whose maps Grad-CAM reads (default: the last "
        "non-pooling 4-D map larger than 1x1; docs/interpret.md)",
    )
    p.set_defaults(func=cmd_interpret)


def _add_export(sub) -> None:
    """`cnnlab export`."""
    p = sub.add_parser("export", help="export a finished run as ONNX or TorchScript")
    p.add_argument("run_dir")
    p.add_argument(
        "--format",
        choices=["onnx", "torchscript"],
        default="onnx",
        help="ONNX (needs the export extra) or TorchScript (default onnx)",
    )
    p.add_argument("--out", required=True, help="file to write")
    p.set_defaults(func=cmd_export)


def _add_data(sub) -> None:
    """`cnnlab data info|check|get`."""
    data = sub.add_parser("data", help="dataset tools").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND"
    )
    p = data.add_parser("info", help="scan a dataset: Keras's 'Found N images' lines, classes, size")
    p.add_argument("path")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="the validation fraction training will use (default 0.1; 0: none)",
    )
    p.add_argument(
        "--split", choices=["keras", "random"], default="random", help="training's split rule (default random)"
    )
    p.add_argument("--split-seed", "--seed", type=int, default=0, help="training's split_seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_info)
    _add_data_check(data)
    p = data.add_parser(
        "get", help="download a dataset, check its MD5 and write it as image folders (resumable: run it again)"
    )
    p.add_argument("name", choices=["cifar10"])
    p.add_argument("dir", help="a new or empty folder: DIR/train/<class>/*.png and DIR/test/<class>/*.png")
    p.add_argument("--archive", help="use this local copy of cifar-10-python.tar.gz instead of downloading")
    p.add_argument(
        "--batches", action="store_true", help="keep the official python batches instead (DIR/cifar-10-batches-py)"
    )
    p.set_defaults(func=cmd_data_get)


def _add_data_check(data) -> None:
    """`cnnlab data check`."""
    p = data.add_parser("check", help="duplicates and leakage across splits, bad files, class balance, label errors")
    p.add_argument("path")
    p.add_argument("--out", help="new folder for data_check.json and data_check.html (default: data-check-<time>)")
    p.add_argument(
        "--threshold",
        type=int,
        help="near-duplicate: perceptual hashes at most this many bits apart, of 64 (default 4, docs/data_check.md)",
    )
    p.add_argument(
        "--min-size",
        type=int,
        default=0,
        help="flag images whose shorter side is below this many px (default: half the median shorter side, at most 32)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="the validation fraction training will use (default 0.1; 0: none), to check that split too",
    )
    p.add_argument(
        "--split", choices=["keras", "random"], default="random", help="training's split rule (default random)"
    )
    p.add_argument("--split-seed", "--seed", type=int, default=0, help="training's split_seed (default 0)")
    p.add_argument(
        "--label-issues",
        metavar="RUN",
        help="rank suspected label errors of test/ by this finished run's probabilities (cleanlab)",
    )
    p.add_argument(
        "--features",
        metavar="RUN",
        help="also pair near-duplicates by this finished run's penultimate features (shifted, cropped and "
        "re-coloured copies a hash misses)",
    )
    p.add_argument(
        "--similarity",
        type=float,
        help="with --features: the detail correlation of a near-duplicate pair (default 0.7, docs/data_check.md)",
    )
    p.add_argument("--strict", action="store_true", help="exit with status 1 when duplicates cross splits")
    p.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_data_check)


def _add_cache(sub) -> None:
    """`cnnlab cache info|clear`."""
    cache = sub.add_parser("cache", help="the decode cache: info, clear").add_subparsers(
        dest="cache_command", required=True, metavar="CACHE_COMMAND"
    )
    p = cache.add_parser("info", help="where it is, its entries and size, and its limit")
    p.set_defaults(func=cmd_cache)
    p = cache.add_parser("clear", help="remove every entry")
    p.set_defaults(func=cmd_cache)


def _add_models(sub) -> None:
    """`cnnlab models` and `cnnlab summary`."""
    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("summary", help="Keras-style summary of a model")
    p.add_argument("model")
    p.add_argument("--input-size", type=int, default=0, help="side of the input images (default: the model's)")
    p.add_argument("--num-classes", type=int, default=10, help="outputs of the last layer (default 10)")
    p.set_defaults(func=cmd_summary)


def _add_lr_find(sub) -> None:
    """`cnnlab lr-find`."""
    from .presets import PRESETS

    p = sub.add_parser("lr-find", help="learning-rate finder: an exponential lr sweep, its plot and a suggestion")
    p.add_argument("--preset", choices=list(PRESETS), default="fast", help="named config (default: fast)")
    p.add_argument("--config", help="JSON config file (a run's config.json 'config' object works)")
    p.add_argument("--out", help="folder for lr_find.png and lr_find.json (default: runs/lr-find-<preset>-<time>)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="steps of the sweep, one batch each (default 100)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_lr_find)


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    parser = argparse.ArgumentParser(prog="cnnlab", description="Train and compare image classifiers.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_train,
        _add_sweep,
        _add_report,
        _add_evaluate,
        _add_predict,
        _add_interpret,
        _add_export,
        _add_data,
        _add_cache,
        _add_models,
        _add_lr_find,
    ):
        add(sub)
    return parser


def _rank() -> int:
    from .distributed import rank

    return rank()


TRAINING_COMMANDS = (
    "train",
    "sweep",
    "lr-find",
)  # commands whose process is tuned for training (device.tune_for_training)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in TRAINING_COMMANDS and not (
            getattr(args, "print_config", False) or getattr(args, "dry_run", False)
        ):
            from .device import tune_for_training

            tune_for_training(getattr(args, "device", None) or "auto")
        return args.func(args)
    except Interrupted as exc:
        if _rank() == 0:  # under torchrun every rank stops; rank 0 says so
            print(f"stopped: {exc}", file=sys.stderr)
        return 130
    except CnnlabError as exc:
        print_error(str(exc) if _rank() == 0 else f"rank {_rank()}: {exc}")
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
