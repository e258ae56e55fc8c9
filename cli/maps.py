"""``llmstd maps list`` and ``llmstd maps show ARCH``."""

from __future__ import annotations

import argparse

from llmstd.cli.errors import handle_errors
from llmstd.cli.options import add_json, print_json

from llmstd import maps as naming_maps


def add_parser(commands: argparse._SubParsersAction) -> None:
    about = "List and show the naming maps (one per architecture)."
    group = commands.add_parser("maps", help=about, description=about)
    group.set_defaults(usage_of=group)
    maps_commands = group.add_subparsers(title="commands", metavar="COMMAND")
    about = "List the architectures llmstd has naming maps for."
    listing = maps_commands.add_parser("list", help=about, description=about)
    add_json(listing)
    listing.set_defaults(run=list_maps)
    about = "Show every canonical tensor of one architecture with its name and transforms per dialect."
    showing = maps_commands.add_parser("show", help=about, description=about)
    showing.add_argument("arch", help="Architecture name, e.g. llama.")
    add_json(showing)
    showing.set_defaults(run=show)


@handle_errors
def list_maps(args: argparse.Namespace) -> None:
    """List the architectures llmstd has naming maps for."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    rows = []
    for arch in naming_maps.available():
        nmap = naming_maps.load(arch)
        rows.append({"architecture": arch, "dialects": list(nmap.dialects), "model_types": list(nmap.model_types),
                     "description": nmap.description, "file": str(nmap.path)})
    if args.json_out:
        print_json(rows)
        return
    table = Table()
    for column in ("architecture", "dialects", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["architecture"], ", ".join(row["dialects"]), escape(row["description"]))
    Console(highlight=False).print(table)


@handle_errors
def show(args: argparse.Namespace) -> None:
    """Show every canonical tensor of one architecture with its name and transforms per dialect."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    nmap = naming_maps.load(args.arch)
    entries = []
    for entry in nmap.entries:
        entries.append({
            "canonical": list(entry.canonical),
            "dialects": {d: {"name": n.name, "transforms": [s.describe() for s in n.steps], "aliases": list(n.aliases)}
                         for d, n in entry.dialects.items()},
        })
    fields = {}
    for name, rule in nmap.fields.items():
        if rule.present is not None:
            fields[name] = {"present": rule.present}
        elif rule.has_fixed:
            fields[name] = {"fixed": rule.fixed}
        else:
            fields[name] = {"key": rule.key, **({"aliases": list(rule.aliases)} if rule.aliases else {}),
                            **({"default": rule.default} if rule.has_default else {}),
                            **({"values": dict(rule.values)} if rule.values else {}),
                            **({"value_aliases": dict(rule.value_aliases)} if rule.value_aliases else {}),
                            **({"nullable": True} if rule.nullable else {})}
    config_keys = {
        "harmless": {k: r.reason for k, r in sorted(nmap.keys.items()) if r.harmless},
        "refused": {k: {"reason": r.reason, "allowed": list(r.allow)} for k, r in sorted(nmap.keys.items())
                    if not r.harmless},
    }
    if args.json_out:
        print_json({"architecture": nmap.architecture, "file": str(nmap.path), "extends": list(nmap.extends),
                    "model_types": list(nmap.model_types), "config_fields": fields, "config_keys": config_keys,
                    **({"rope_4x": nmap.rope_4x} if nmap.rope_4x else {}), "tensors": entries,
                    "ignored": {d: [{"pattern": i.pattern, "reason": i.reason} for i in dl.ignore]
                                for d, dl in nmap.dialects.items()}})
        return
    out = Console(highlight=False)
    out.print(f"[bold]{nmap.architecture}[/] — {escape(nmap.description)}\n  {nmap.path}")
    if nmap.extends:
        out.print(f"  resolved: extends {' → '.join(nmap.extends)}")
    rules = Table(title="config fields")
    for column in ("canonical field", "from the framework config"):
        rules.add_column(column)
    for name, rule in fields.items():
        rules.add_row(name, escape(", ".join(f"{k}={v!r}" if k != "key" else str(v) for k, v in rule.items())))
    out.print(rules)
    table = Table()
    table.add_column("canonical")
    for dialect in nmap.dialects:
        table.add_column(dialect)
    for entry in entries:
        cells = []
        for dialect in nmap.dialects:
            d = entry["dialects"].get(dialect)
            if d is None:
                cells.append("—")
                continue
            ops = " ".join(s["op"] + "(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "op") + ")"
                           for s in d["transforms"])
            cells.append(d["name"] + (f"  [dim]{ops}[/]" if ops else ""))
        table.add_row("\n".join(entry["canonical"]), *cells)
    out.print(table)
    for dialect, dl in nmap.dialects.items():
        for ig in dl.ignore:
            out.print(f"  {dialect} ignores {escape(ig.pattern)}: {escape(ig.reason)}")
    for key, spec in config_keys["refused"].items():
        allowed = f" unless {' or '.join(map(repr, spec['allowed']))}" if spec["allowed"] else ""
        out.print(f"  config key {escape(key)} refused{escape(allowed)}: {escape(spec['reason'])}")
    if nmap.rope_4x:
        out.print("  transformers 4.x rotary keys: " + ", ".join(f"{k}={v!r}" for k, v in nmap.rope_4x.items()))
    out.print(f"  {len(config_keys['harmless'])} config keys harmless (--json lists them with reasons)")
