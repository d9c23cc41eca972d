"""The run-folder commands: ``runs upgrade``."""

from __future__ import annotations

import argparse

__all__ = ["add_runs_parser", "cmd_runs_upgrade"]


def cmd_runs_upgrade(args: argparse.Namespace) -> int:
    from sidda.runs.upgrade import upgrade_run  # loads torch: only when the command runs

    done = upgrade_run(args.run_dir, trust=args.trust)
    for path in done.converted:
        print(f"converted {path}")
    for path in done.tagged:
        print(f"added a checksum to {path}")
    if not done.converted and not done.tagged:
        print(f"{args.run_dir}: every checkpoint is already in the present format "
              f"({len(done.current)} checked); nothing to do")
    return 0


def add_runs_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``sidda runs ACTION`` to the subcommands ``sub``."""
    runs = sub.add_parser("runs", help="maintain run folders").add_subparsers(
        dest="runs_command", required=True, metavar="ACTION")
    up = runs.add_parser(
        "upgrade", parents=[common], help="rewrite a run's checkpoints in the safe format",
        description="Rewrite the checkpoints of RUN_DIR that an older sidda wrote (a NumPy "
        "random state in last.pt, or no checksum) in the present format, which loads without "
        "running code. Reading the old files trusts them, so it needs --trust; without it "
        "nothing is written (docs/recovery.md, \"What is safe to open\").")
    up.add_argument("run_dir", metavar="RUN_DIR")
    up.add_argument("--trust", action="store_true",
                    help="you trust where the run came from (you trained it, or got it from "
                    "someone you trust)")
    up.set_defaults(func=cmd_runs_upgrade)
