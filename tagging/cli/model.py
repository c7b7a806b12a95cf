"""Model commands: train, evaluate, evaluate-photos, and the registry's."""

from __future__ import annotations

import json
from pathlib import Path

from tagging.cli.args import policy_of, registry_of
from tagging.cli.render import console, metrics_table, photo_check_table, print_decision


def train(args) -> int:
    from tagging.model.config import TrainConfig
    from tagging.model.train import train_candidate
    from tagging.pipeline.learn import labels_of, train_and_promote

    overrides = {k: v for k, v in {"model_input": args.input,
                                   "epochs": args.epochs, "train_subset": args.train_subset,
                                   "seed": args.seed, "real_photos": args.real_photos,
                                   "label_store": args.label_store and str(args.label_store),
                                   "real_photo_repeats": args.real_photo_repeats,
                                   }.items() if v is not None}
    if args.hidden_units:
        overrides["hidden_units"] = [int(u) for u in args.hidden_units.split(",")]
    train_config = TrainConfig.from_dict(overrides)
    registry_root = registry_of(args).root
    common = dict(registry_root=registry_root, data_dir=args.data_dir,
                  created_by="cli:tagging train", progress=True)
    if args.no_promote:
        candidate, decision = train_candidate(train_config, labelled=labels_of(train_config),
                                              reuse_if_unchanged=False, **common), None
    else:
        candidate, decision = train_and_promote(train_config, policy=policy_of(args), **common)
    info = registry_of(args).get(candidate.version)
    console.print(metrics_table(f"{candidate.version}: Fashion-MNIST test split",
                                info.metadata["metrics"]))
    m = info.metadata["metrics"]
    console.print(f"trained {m['epochs_run']} epochs in {m['train_wall_time_s']:.1f} s; "
                  f"report: {info.path / 'report'}")
    if "real_photos" in m:
        console.print(photo_check_table(m["real_photos"]))
    if decision is not None:
        print_decision(decision)
    console.print(f"champion: {registry_of(args).champion()}")
    return 0


def evaluate(args) -> int:
    import numpy as np

    from tagging.model.data import load_fashion_mnist
    from tagging.model.features import as_input
    from tagging.model.inference import Classifier
    from tagging.model.inputs import ModelInput
    from tagging.model.report import evaluate, plot_confusion

    registry = registry_of(args)
    info = registry.get(args.version)
    model_input = ModelInput.of_version(info.version, info.metadata)
    classifier = Classifier.from_keras(registry.load_keras_model(info.version),
                                       info.metadata.get("calibration"), model_input)
    data = load_fashion_mnist(args.data_dir)
    metrics = evaluate(classifier.predict_proba(as_input(model_input, data.x_test, progress=True)),
                       data.y_test)
    console.print(metrics_table(f"{info.version}: Fashion-MNIST test split", metrics))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_confusion(np.array(metrics["confusion_matrix"]),
                       args.out / "confusion_matrix.png", f"{info.version}: test split")
        console.print(f"wrote {args.out}/metrics.json and confusion_matrix.png")
    return 0


def evaluate_photos(args) -> int:
    from tagging.model.evaluate import evaluate_photos
    from tagging.model.inference import Classifier

    classifier = Classifier.from_registry(registry_of(args).root, args.model)
    report = evaluate_photos(args.images, args.manifest, classifier, args.out)
    console.print_json(json.dumps({k: v for k, v in report.items()
                                   if not isinstance(v, list | dict) or k == "per_source"}))
    console.print(f"report, contact sheet and reliability diagram in {args.out}")
    info = registry_of(args).get(args.model)
    trained_on = info.metadata["hyperparameters"].get("real_photos")
    if not trained_on:
        console.print(f"[yellow]note: {info.version} never saw labelled real photos (its "
                      "needs_review threshold comes from the validation split); for a real "
                      "catalogue train with --real-photos DIR[/yellow]")
    elif Path(trained_on).resolve() in Path(args.images).resolve().parents:
        console.print(f"[yellow]warning: {info.version} was trained or calibrated on {trained_on}: "
                      "these figures are in-sample; the held-out ones are in "
                      f"{info.path / 'report' / 'real-photos'}[/yellow]")
    return 0


def list_versions(args) -> int:
    from model_registry.render import render_version_list

    console.print(render_version_list(registry_of(args)), end="")
    return 0


def show(args) -> int:
    from model_registry.render import render_version

    console.print(render_version(registry_of(args), args.version), end="", markup=False)
    return 0


def promote(args) -> int:
    decision = registry_of(args).promote(args.version, policy=policy_of(args),
                                         actor="cli:tagging registry promote", force=args.force)
    print_decision(decision)
    return 0 if decision.passed or decision.forced else 2


def rollback(args) -> int:
    version = registry_of(args).rollback(actor="cli:tagging registry rollback")
    console.print(f"champion rolled back to {version}")
    return 0


def events(args) -> int:
    for event in registry_of(args).events():
        console.print(json.dumps(event), markup=False, soft_wrap=True)  # one JSON per line
    return 0
