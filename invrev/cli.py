"""The ``invrev`` command line. ``invrev --help`` lists the commands; each has its own ``--help``.

Building the parser imports nothing heavy: torch and diffusers load inside the command that needs
them, so ``--help`` and a mistyped argument answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from invrev.paths import RUN_NOTEBOOK, WORLD_MODEL
from invrev.paths import WORLD_BENCHMARK as BENCHMARK
from invrev.world_model.config import PretrainConfig

EPILOG = """\
start here:
  invrev demo                                  train one relation on the embedded world, draw a grid
  invrev train --relation inside               learn <r> for one relation (variant inv_reversion)
  invrev generate --run runs/inside/inv_reversion/seed0 --prompt "a red circle <r> a blue square"
  invrev evaluate --relation inside --variant inv_reversion --embeddings runs/inside/inv_reversion/seed0
  invrev world check-scorer --seed 7 --per-relation 200

on Stable Diffusion 1.5 (GPU, model downloaded or on the hub):
  invrev train --model stable-diffusion-v1-5/stable-diffusion-v1-5 --exemplars path/to/reversion/inside
"""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; rerun with --resume to continue", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as err:
        hint = "" if err.__class__.__module__.startswith("invrev") or not isinstance(err, OSError) else \
            " (check that path: does it exist, is it writable, is the disk full?)"
        print(f"invrev: error: {err}{hint}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invrev", description="Relation inversion (Inv-ReVersion) on Stable Diffusion-shaped models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(title="commands")

    p = sub.add_parser("train", help="learn a relation token from exemplar images")
    _add_run_args(p)
    p.add_argument("--out", default="runs", help="runs root; the run goes to OUT/<relation>/<variant>/seed<k> (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set steps=100 (JSON values; repeatable)")
    p.set_defaults(func=_train)

    p = sub.add_parser("generate", help="draw images for prompts with a learned relation (or in words)")
    p.add_argument("--run", help="a finished run folder: its learned tokens are loaded")
    p.add_argument("--model", default=None, help=f"model id or folder (default: the run's model, else {WORLD_MODEL})")
    p.add_argument("--prompt", action="append", required=True, help="a prompt; repeat for several")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="one image per prompt and seed")
    _add_sampling_args(p)
    p.add_argument("--out", default="outputs/generate", help="folder for the images and grid.png")
    p.add_argument("--overwrite", action="store_true", help="replace images and grid.png an earlier call wrote to --out")
    p.set_defaults(func=_generate)

    p = sub.add_parser("evaluate", help="score a relation's held-out test prompts (relation world)")
    p.add_argument("--model", default=WORLD_MODEL)
    p.add_argument("--relation", required=True)
    p.add_argument("--variant", required=True)
    p.add_argument("--embeddings", help="run folder with learned/ (not needed for the sd variant)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=20, help="held-out entity pairs (default 20)")
    p.add_argument("--samples", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--seen-prompts", type=int, default=20,
                   help="also this many seen pairs of different shapes, reported beside (default 20; 0: none)")
    _add_sampling_args(p)
    p.add_argument("--out", help="write metrics.json and grid.png into this folder")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("demo", help="the main job: train one relation on the embedded world and draw a grid")
    p.add_argument("--relation", default="wrapped_in", help="an unnamed relation by default: its words do not draw it")
    p.add_argument("--model", default=WORLD_MODEL, help="a world model folder (default: the embedded one)")
    p.add_argument("--out", default="outputs/demo")
    p.set_defaults(func=_demo)

    _add_batch_commands(sub)

    world = sub.add_parser("world", help="the embedded relation world: scorer check, benchmark, pretraining")
    wsub = world.add_subparsers(title="world commands")
    p = wsub.add_parser("check-scorer", help="score fresh renders against true and mismatched captions")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--per-relation", type=int, default=200)
    p.set_defaults(func=_check_scorer)
    p = wsub.add_parser("benchmark", help="write the exemplar folders and test prompts")
    p.add_argument("--out", default=BENCHMARK)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_benchmark)
    p = wsub.add_parser("pretrain", help="train the world's text-to-image model from scratch, or continue one (--init-from)")
    p.add_argument("--out", default="outputs/world_pretrain")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in --out")
    _add_config_options(p, PretrainConfig, PRETRAIN_HELP)
    p.set_defaults(func=_pretrain)
    p = wsub.add_parser("premises", help="does a world model give each mechanism its premise? the role swap and the words")
    p.add_argument("--model", default=WORLD_MODEL)
    p.add_argument("--split", default="validation", choices=("validation", "held_out", "seen"))
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--out", help="JSON file for the measurements")
    p.set_defaults(func=_premises)
    p = wsub.add_parser("report", help="per-relation accuracy of a world model prompted in words")
    p.add_argument("--model", default=WORLD_MODEL)
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--samples", type=int, default=4)
    p.set_defaults(func=_report)
    p = wsub.add_parser("sweep", help="sampling settings on validation pairs: accuracy per guidance and step count")
    p.add_argument("--model", default=WORLD_MODEL)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0, 3.0, 4.0])
    p.add_argument("--steps", type=int, nargs="+", default=[25])
    p.add_argument("--scheduler", help="a diffusers scheduler class name (default: the model's own)")
    p.add_argument("--rescale", type=float, nargs="+", default=[0.0], help="guidance rescale values (default 0: off)")
    p.add_argument("--pairs", type=int, default=16, help="validation pairs per relation (default 16)")
    p.add_argument("--samples", type=int, default=1, help="images per pair (default 1)")
    p.add_argument("--unnamed", action="store_true", help="also the five unnamed relations in words (default: named only)")
    p.add_argument("--out", help="a JSON file the rows are added to (sweeps of several schedulers add up)")
    p.add_argument("--write-model", action="store_true",
                   help="write the best setting over all rows of --out into the model's invrev.json")
    p.set_defaults(func=_sweep)
    p = wsub.add_parser("ship", help="install a pretrained model as the embedded default, with its manifest")
    p.add_argument("--source", required=True, help="the model folder written by `invrev world pretrain`")
    p.add_argument("--dest", default=WORLD_MODEL)
    p.add_argument("--prompts", type=int, default=20, help="held-out prompts per relation in the report (default 20)")
    p.add_argument("--samples", type=int, default=4, help="images per prompt in the report (default 4)")
    p.set_defaults(func=_ship)
    world.set_defaults(func=lambda a: world.print_help() or 2)
    return parser


def _add_batch_commands(sub) -> None:
    p = sub.add_parser("batch", help="run experiments (relation x variant x seed) through the run notebook",
                       description="Experiments as data, run through the run notebook: validate first, skip what is done, keep going.")
    p.add_argument("--experiments", required=True, help="experiment file, e.g. experiments/full.yaml or experiments/smoke.yaml")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--workers", type=int, help="worker processes of the local Dask cluster, notebooks run side by side; "
                   "one GPU each where several (default: one per GPU, else 1)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask cluster's scheduler, e.g. tcp://node1:8786, whose workers "
                   "share the runs folder (default: a local cluster)")
    p.add_argument("--joint", type=int, default=0, metavar="K", help="first train and evaluate the runs in groups of K of one relation, one process per group "
                   "(the model loads once); the notebooks then show the record (default 0: off)")
    p.add_argument("--notebook", default=RUN_NOTEBOOK, help=f"run notebook (default {RUN_NOTEBOOK})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run-notebook parameter for every run, e.g. --set steps=100 (JSON values; repeatable)")
    p.add_argument("--relations", nargs="+", help="only these relations of the experiment")
    p.add_argument("--variants", nargs="+", help="only these variants of the experiment")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds of the experiment")
    p.add_argument("--dry-run", action="store_true", help="check the plan and list what would run; run nothing")
    p.set_defaults(func=_batch)

    p = sub.add_parser("collect", help="copy the compact record of every run into results/latest for the book")
    p.add_argument("--runs", default="runs", help="runs root (default: runs)")
    p.add_argument("--dest", default="results/latest", help="where the record goes (default: results/latest)")
    p.add_argument("--replace", action="store_true",
                   help="start the record afresh from --runs (default: keep the record's runs that --runs lacks)")
    p.add_argument("--no-execute", action="store_true", help="copy only; do not execute the results notebook")
    p.set_defaults(func=_collect)

    p = sub.add_parser("tables", help="recompute the tables a Markdown file shows between invrev:table markers")
    p.add_argument("files", nargs="+", help="Markdown files (README.md, book pages)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its record")
    p.set_defaults(func=_tables)

    p = sub.add_parser("notebooks", help="execute every notebook with tiny parameters (a smoke run)")
    p.add_argument("--out", default="outputs/notebooks", help="where the executed notebooks go (default: outputs/notebooks)")
    p.add_argument("--model", help="model for the notebooks that take one (default: their own, the world model)")
    p.set_defaults(func=_notebooks)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--relation", help=f"relation folder name under --data (default data root: {BENCHMARK})")
    p.add_argument("--data", default=BENCHMARK, help="benchmark root in the ReVersion layout")
    p.add_argument("--exemplars", help="a relation folder anywhere (instead of --relation/--data)")
    p.add_argument("--variant", default="inv_reversion", help="sd, textual_inversion, reversion, inv_reversion, no_inverse, no_pos_weight, no_hf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=WORLD_MODEL, help="hub id or local folder (default: the embedded world model)")
    p.add_argument("--recipe", choices=("world", "sd15"), help="defaults to use (default: the model's invrev.json says; world for the world model and its copies, else sd15)")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    model_own = "the model's recommendation in its invrev.json; SD 1.5: "
    p.add_argument("--steps", type=int, help=f"denoising steps (default: {model_own}50)")
    p.add_argument("--guidance", type=float, help=f"classifier-free guidance (default: {model_own}7.5)")
    p.add_argument("--scheduler", help="a diffusers scheduler class name (default: the model's recommendation, else its own)")


def _run_config(args):
    from invrev.config import parse_assignments
    from invrev.experiments import run_config
    from invrev.runs import repo_path

    if not (args.exemplars or args.relation):
        raise ValueError("give --relation NAME (under --data) or --exemplars FOLDER")
    exemplars = args.exemplars or str(repo_path(args.data) / args.relation)
    if not args.exemplars and not Path(exemplars).is_dir():
        import difflib

        known = sorted(p.name for p in Path(exemplars).parent.glob("*") if p.is_dir())
        close = difflib.get_close_matches(args.relation, known, n=1)
        raise ValueError(f"--relation {args.relation!r}: no folder {exemplars}"
                         + (f"; did you mean {close[0]!r}?" if close else f"; relations there: {', '.join(known) or 'none'}"))
    given = {"model": args.model, "seed": args.seed, **parse_assignments(getattr(args, "set", []))}
    return run_config(exemplars, args.variant, recipe=args.recipe, **given)


def _train(args) -> int:
    from invrev import runs, trainer

    config = _run_config(args)
    folder = runs.run_dir(args.out, config.relation, config.variant, config.seed)
    trainer.train(config, folder, resume=args.resume)
    print(f"run written to {folder}")
    return 0


def _generate(args) -> int:
    from invrev import generate
    from invrev.models import load_components

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps {args.steps}: give at least 1 denoising step")
    prompts = [p for p in args.prompt for _ in args.seeds]
    seeds = [s for _ in args.prompt for s in args.seeds]
    paths = generate.image_paths(prompts, seeds, args.out)
    if not args.overwrite:
        generate.check_free(paths + [Path(args.out) / "grid.png"])
    if args.run:  # checked before the model loads
        generate.check_prompts(args.prompt, list(generate.read_run_tokens(args.run)))
    model = args.model or (json.loads((Path(args.run) / "config.json").read_text())["model"] if args.run else WORLD_MODEL)
    components = load_components(model)
    if args.run:
        generate.load_run_tokens(components, args.run)
    images = generate.generate(components, prompts, seeds, args.steps, args.guidance, args.scheduler, progress=True)
    generate.save_images(images, paths)
    scale = max(1, 128 // images[0].shape[0])
    generate.grid(images, len(args.seeds), scale).save(Path(args.out) / "grid.png")
    print(f"{len(paths)} images and grid.png written to {args.out}")
    return 0


def _evaluate(args) -> int:
    from invrev import evaluate

    metrics = evaluate.evaluate(
        args.model, args.relation, args.variant, args.embeddings, seed=args.seed, prompts=args.prompts,
        samples=args.samples, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, out=args.out,
        seen_prompts=args.seen_prompts)
    print(json.dumps(metrics["summary"], indent=2))
    return 0


def _demo(args) -> int:
    from invrev import demo
    from invrev.runs import repo_path

    demo.run(args.relation, args.out, repo_path(BENCHMARK), args.model)
    return 0


def _batch(args) -> int:
    from invrev import batch
    from invrev.config import parse_assignments

    result = batch.run_batch(args.experiments, args.runs, args.workers, args.joint, args.notebook, scheduler=args.scheduler,
                             relations=args.relations, variants=args.variants, seeds=args.seeds,
                             dry_run=args.dry_run, **parse_assignments(args.set))
    return 1 if result.failed else 0


def _collect(args) -> int:
    from invrev import record

    dest = record.collect(args.runs, args.dest, replace=args.replace, execute=not args.no_execute)
    print(f"compact record of {len(record.load_runs(dest))} runs written to {dest}")
    return 0


def _tables(args) -> int:
    from invrev import record, summary
    from invrev.paths import REPO_ROOT

    stale = []
    for name in args.files:
        path = Path(name)
        text = path.read_text()
        fresh = summary.render(text, REPO_ROOT, record.load_runs)
        if fresh != text:
            stale.append(name)
            if not args.check:
                path.write_text(fresh)
    verb = "differ from their records" if args.check else "rewritten from their records"
    print(f"tables in {', '.join(stale)}: {verb}" if stale else "every table matches its record")
    return 1 if stale and args.check else 0


def _notebooks(args) -> int:
    from invrev import notebooks

    notebooks.run_notebooks(args.out, args.model)
    return 0


def _check_scorer(args) -> int:
    from invrev.world import scorer_check

    rows = scorer_check.check_scorer(args.seed, args.per_relation)
    print(scorer_check.format_table(rows))
    failed = [r.relation for r in rows if not r.passed]
    if failed:
        print(f"failed the check (>= 98% agreement on true renders, <= 1% entity passes on broken ones): "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _benchmark(args) -> int:
    from invrev.world_model import release

    root = release.write_benchmark(args.out, args.seed)
    print(f"benchmark written to {root}")
    return 0


def _premises(args) -> int:
    from invrev.world_model import premises

    share = premises.trained_share(v2=True)
    words = {"trained_share": share, "cosine": premises.cosine_structure(args.model)}
    print(f"steering positives with a world meaning that are trained rows: {share['with a world meaning']}")
    print(f"cosine structure of the token table: {words['cosine']}")
    rows = premises.swap_table(args.model, args.split, args.prompts, args.samples)
    print(premises.format_swap_table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "split": args.split, "swap": rows, "words": words},
                                             indent=1) + "\n")
    return 0


def _report(args) -> int:
    from invrev.world_model import release

    print(release.format_report(release.report(args.model, args.prompts, args.samples)))
    return 0


def _sweep(args) -> int:
    from invrev.world_model import release

    settings = [{"guidance": g, "steps": n, "scheduler": args.scheduler, "guidance_rescale": r}
                for n in args.steps for r in args.rescale for g in args.guidance]
    rows = release.sweep(args.model, settings, args.pairs, args.samples, unnamed=args.unnamed)
    if args.out:
        out = Path(args.out)
        rows = (json.loads(out.read_text()) if out.is_file() else []) + rows
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
    print(release.format_sweep(rows))
    if args.write_model:
        chosen = release.write_sampling(args.model, rows)
        print(f"wrote {chosen} into {args.model}/invrev.json")
    return 0


def _ship(args) -> int:
    from invrev.world_model import release

    dest = release.ship(args.source, args.dest, args.prompts, args.samples)
    print(f"model shipped to {dest}; manifest at {dest.parent / 'manifest.json'}")
    return 0


PRETRAIN_HELP = {
    "minutes": "stop (and save) after this much wall time",
    "workers": "processes rendering batches (-1: none on a CPU, all cores but two on a GPU)",
    "init_from": "continue from this model folder (warm start) instead of a fresh model",
    "unnamed_share": "fraction of scenes showing an unnamed relation",
    "handle_share": "fraction of those captioned by the relation's handle",
    "synonym_share": "fraction captioned by a synonym (world language v2)",
    "converse_share": "fraction of named scenes captioned with the roles swapped ('B supporting A')",
    "swap_share": "fraction of captions said with the swap word ('B ob on A')",
    "bare_share": "fraction of captions without articles ('red circle on blue square')",
    "eval_every": "sample validation pairs every N steps and keep the best model (0: never)",
}


def _add_config_options(parser: argparse.ArgumentParser, config: type, helps: dict[str, str]) -> None:
    """One ``--field-name`` option per field of the dataclass ``config``, its default the field's."""
    for f in dataclasses.fields(config):
        default = f.default
        parser.add_argument("--" + f.name.replace("_", "-"), type=type(default), default=default,
                            help=f"{helps.get(f.name, f.name.replace('_', ' '))} (default {default!r})")


def _pretrain(args) -> int:
    from invrev.world_model import pretrain

    config = PretrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)})
    out = pretrain.pretrain(args.out, config, resume=not args.fresh)
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
