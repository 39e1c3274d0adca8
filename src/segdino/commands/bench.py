"""`segdino bench`: inference and training speed, engine by engine and decoder by decoder
(`segdino.benchmark`, `segdino.bench_report`), and on request the commands around the model
(`segdino.benchmark_end_to_end`) and ensembles and cross-validation
(`segdino.benchmark_evidence`)."""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from segdino.argtypes import int_at_least, int_between, positive_float
from segdino.atomic import write_text
from segdino.backbone import build_backbone
from segdino.backbone.factory import resolve_arch
from segdino.bench_report import (
    compare_decoders,
    format_decoders,
    format_table,
    hardware,
    progress_printer,
)
from segdino.benchmark import DEFAULT_ENGINES, FORMAT, bench_inference, bench_training, parse_engine
from segdino.benchmark_end_to_end import bench_end_to_end, format_end_to_end
from segdino.benchmark_evidence import (
    CV_EPOCHS,
    CV_IMAGES,
    bench_cross_validation,
    bench_ensemble,
    format_evidence,
)
from segdino.commands.flags import add_progress, default_workers
from segdino.errors import UserError
from segdino.inference.engines import ENGINES
from segdino.models.decoders import DECODERS, DEFAULT
from segdino.models.segdino import SegDINO
from segdino.runtime import pick_device, resolve_precision


def report_path(text: str) -> Path:
    """`--json FILE`: a new file, or a report of an earlier bench (never a user's file)."""
    path = Path(text)
    if path.is_dir():
        raise UserError(f"--json {path}: a folder (expected a file name)")
    if path.exists():
        try:
            ours = json.loads(path.read_text()).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
            ours = False
        if not ours:
            raise UserError(f"--json {path}: exists and is not a segdino bench report; "
                            "refusing to write over it (choose another file)")
    return path


COMMAND_BATCH = 8  # segdino test's and predict's default --batch-size


def configure(parser: argparse.ArgumentParser) -> None:
    # Types that raise UserError (--arch, --engines, --device, --json) refuse at parse time
    # too: the command line prints it as its one-line error.
    parser.add_argument("--decoder", choices=[*DECODERS, "all"], nargs="+", default=[DEFAULT],
                        help=f"the decoders to time, one after another on the same backbone, "
                        f"then side by side (all: {', '.join(DECODERS)}; default {DEFAULT})")
    parser.add_argument("--arch", default="vits16", type=resolve_arch,
                        help="backbone architecture, randomly initialised (default vits16)")
    parser.add_argument("--size", type=int_at_least(1), nargs="+", default=[256], metavar="PX",
                        help="input height and width, or one number for both (default 256)")
    parser.add_argument("--batch-sizes", type=int_at_least(1), nargs="+", default=[1, 8],
                        metavar="B", help="inference batch sizes (default 1 8)")
    parser.add_argument("--engines", type=parse_engine, nargs="+", metavar="E",
                        help="fp32, bf16, auto (eager PyTorch), or ENGINE[-PRECISION] with "
                        f"ENGINE one of {', '.join(ENGINES)} (default: "
                        f"{' '.join(DEFAULT_ENGINES)}; eager fp32 always runs first; an "
                        "engine whose optional extra is not installed is skipped)")
    parser.add_argument("--warmup", type=int_at_least(1), default=2,
                        help="untimed calls first (default 2)")
    parser.add_argument("--repeats", type=int_at_least(1), default=10,
                        help="timed calls; the median counts (default 10)")
    parser.add_argument("--budget", type=positive_float, default=30.0, metavar="S",
                        help="stop a row's timed calls after S seconds, if 3 or more ran")
    parser.add_argument("--train-batch", type=int_at_least(0), default=4,
                        help="training batch size; 0 skips training (default 4)")
    parser.add_argument("--end-to-end", type=int_at_least(0), default=0, metavar="N",
                        help="also time segdino test and predict (with and without overlays) "
                        "on N generated JPEGs of Kvasir-SEG's sizes, against the model alone "
                        f"(batch {COMMAND_BATCH}, as the commands; 0: not run; default 0)")
    parser.add_argument("--end-to-end-rounds", type=int_at_least(1), default=2, metavar="R",
                        help="the end-to-end timings' fastest of R rounds (default 2)")
    parser.add_argument("--ensemble", type=int_at_least(0), default=0, metavar="K",
                        help="also time a K-member ensemble of each decoder against one model "
                        "of it, on the same backbone (eager fp32, the forward pass alone, at "
                        "--batch-sizes; 0: not run; default 0)")
    parser.add_argument("--folds", type=int_between(0, CV_IMAGES), default=0, metavar="K",
                        help="also time K-fold cross-validation against one training run, "
                        f"both with the feature cache, on {CV_IMAGES} generated images of "
                        f"--size, {CV_EPOCHS} epochs, the first decoder named (0: not run; "
                        "default 0)")
    parser.add_argument("--json", metavar="FILE", type=report_path,
                        help="also write the results as JSON (a new file, or an earlier report)")
    parser.add_argument("--device", metavar="D", type=pick_device,
                        help="cpu, cuda, cuda:N or mps (default: the best available)")
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    if len(args.size) > 2:
        raise UserError(f"--size {' '.join(map(str, args.size))}: expected one or two numbers")
    if args.folds == 1:
        raise UserError("--folds 1: expected 0 (not run) or 2 folds or more")
    size = (args.size[0], args.size[-1])
    device = pick_device() if args.device is None else args.device
    arch = args.arch
    decoders = list(DECODERS) if "all" in args.decoder else list(dict.fromkeys(args.decoder))
    default_label = f"torch-{resolve_precision(device, 'auto')}"
    header = (f"segdino bench: {arch}, {size[0]} x {size[1]}, {device} ({hardware(device)}, "
              f"{torch.get_num_threads()} threads), torch {torch.__version__}, "
              f"decoder{'s' if len(decoders) > 1 else ''} {', '.join(decoders)}")
    progress = progress_printer(not args.no_progress)
    progress(header)
    engines = args.engines or [parse_engine(e) for e in DEFAULT_ENGINES]
    torch.manual_seed(0)
    backbone = build_backbone(arch)  # one for all: only the decoder differs
    inference, training, skipped, parameters, ensembles = [], [], [], {}, []
    for name in decoders:
        torch.manual_seed(0)
        model = SegDINO(backbone, decoder=name).to(device).eval()
        parameters[name] = model.trainable_parameters()
        rows, missing = bench_inference(model, device, engines, args.batch_sizes, size,
                                        args.warmup, args.repeats, args.budget, progress)
        inference += rows
        skipped += [note for note in missing if note not in skipped]
        if args.train_batch:
            progress(f"{name}: training, batch {args.train_batch}")
            training += bench_training(model, device, args.train_batch, size, args.warmup,
                                       args.repeats, args.budget)
        if args.ensemble:
            ensembles += bench_ensemble(model, args.ensemble, device, args.batch_sizes, size,
                                        args.warmup, args.repeats, args.budget, progress)
        del model
    compared = compare_decoders(inference, training, parameters)
    end_to_end, load_s, costs, workers = [], 0.0, {}, default_workers()
    if args.end_to_end:  # with the first decoder named
        end_to_end, load_s, costs = bench_end_to_end(
            args.end_to_end, arch, decoders[0], size, COMMAND_BATCH, workers, device,
            args.end_to_end_rounds, progress)
    cv = (bench_cross_validation(args.folds, arch, decoders[0], size, device, workers,
                                 progress=progress)
          if args.folds else None)
    print(header)
    print(format_table(inference, training, default_label, skipped))
    if len(decoders) > 1:
        print()
        print(format_decoders(compared))
    if end_to_end:
        print()
        print(format_end_to_end(end_to_end, load_s, costs, COMMAND_BATCH, workers))
    if ensembles or cv:
        print()
        print(format_evidence(cv, ensembles, size))
    if args.json:
        report = {
            "format": FORMAT, "arch": arch, "size": list(size),
            "device": str(device),
            "hardware": hardware(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(), "default_engine": default_label,
            "inference": [asdict(r) for r in inference],
            "training": [asdict(t) for t in training],
            "skipped": skipped,
            "decoders": [asdict(r) for r in compared],
            "end_to_end": [asdict(r) for r in end_to_end],
            **({"end_to_end_load_s": round(load_s, 2), "end_to_end_workers": workers,
                "end_to_end_stage_ms": costs}
               if end_to_end else {}),
            "ensembles": [asdict(r) for r in ensembles],
            "cross_validation": None if cv is None else asdict(cv),
        }
        write_text(args.json, json.dumps(report, indent=2) + "\n")
    return 0
