"""The `drface` command line: one subcommand per job, each implemented in the module it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Modules are imported only when needed.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("app.server", "serve the REST API"),
    "prepare": ("training.prepare", "detect and align a folder-per-identity photo collection"),
    "pack": (
        "training.pack",
        "pack a folder per identity of aligned faces into a .rec (training) or .bin (verification)",
    ),
    "train": ("training.train", "train a model from an aligned dataset or a .rec"),
    "eval": ("training.evaluate", "evaluate a model on CFP, a pairs file or .bin verification sets"),
    "export": ("model.export_cli", "export a model to ONNX (embeddings, optionally region maps), checked"),
    "gallery": (
        "app.gallery.cli",
        "the enrolment gallery: show what it holds, re-embed templates for a new model",
    ),
}


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    """Parser with every subcommand; only `selected` has its options loaded (imports its module)."""
    parser = argparse.ArgumentParser(
        prog="drface", description="Face verification you train and serve yourself."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module_name).configure_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
