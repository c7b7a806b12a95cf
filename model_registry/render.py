"""Text renderings of the registry (what `tagging registry list|show` print)."""

from __future__ import annotations

import io
import json

from rich.console import Console
from rich.table import Table

from model_registry.errors import CorruptMetadataError
from model_registry.registry import Registry


def render_version_list(registry: Registry) -> str:
    """Every version: id, created_at, created_by, accuracies, champion marker."""
    ids = registry.version_ids()
    if not ids:
        return f"registry {registry.root} has no versions yet\n"
    champion = registry.champion()
    table = Table(title=f"model registry {registry.root}")
    for column in ("version", "created_at", "created_by", "input", "accuracy",
                   "real-photo accuracy", "champion"):
        table.add_column(column, justify="right" if "accuracy" in column else "left")
    for version in ids:
        marker = "*" if version == champion else ""
        try:
            meta = registry.get(version, verify_checksums=False).metadata
        except CorruptMetadataError as exc:
            table.add_row(version, "CORRUPT", str(exc), "", "", "", marker)
            continue
        real = meta["metrics"].get("real_photos")
        table.add_row(version, meta["created_at"], meta["created_by"], input_of(meta),
                      f"{meta['metrics']['accuracy']:.4f}",
                      f"{real['accuracy']:.4f}" if real else "", marker)
    return _render(table)


def render_version(registry: Registry, ref: str) -> str:
    """Gate-relevant metrics of one version, then its full metadata as JSON."""
    info = registry.get(ref)
    meta = info.metadata
    metrics = meta["metrics"]
    is_champion = info.version == registry.champion()
    table = Table(title=info.version + (" (champion)" if is_champion else ""))
    table.add_column("field")
    table.add_column("value")
    table.add_row("location", info.location)
    table.add_row("input", input_of(meta))
    table.add_row("accuracy", f"{metrics['accuracy']:.4f}")
    table.add_row("loss", f"{metrics['loss']:.4f}")
    names = registry.class_names or [str(i) for i in range(len(metrics["per_class_recall"]))]
    for name, recall in zip(names, metrics["per_class_recall"], strict=True):
        table.add_row(f"recall {name}", f"{recall:.4f}")
    if real := metrics.get("real_photos"):
        table.add_row("real photos (held out)", real["photos"])
        for key in ("accuracy", "published_precision", "published_coverage"):
            if real.get(key) is not None:
                table.add_row(f"  {key.replace('_', ' ')}", f"{real[key]:.4f}")
    table.add_row("eval_data_fingerprint", meta["eval_data_fingerprint"])
    table.add_row("parent_champion", str(meta["parent_champion"]))
    table.add_row("created", f"{meta['created_at']} by {meta['created_by']}")
    return _render(table) + json.dumps(meta, indent=2) + "\n"


def input_of(meta: dict) -> str:
    """What the version takes: the encoder it was trained on, or pixels."""
    recorded = meta.get("input") or {"kind": "pixels"}
    return recorded.get("encoder") or recorded.get("kind", "pixels")


def _render(table: Table) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=120, color_system=None, soft_wrap=False).print(table)
    return buffer.getvalue()
