"""Compare runs: a leaderboard of every configuration in a sweep (or outputs) directory, seeds grouped.

python report.py multirun/2026-11-22/10-00-00-000000-1234     (or: make report DIR=...)

Prints the leaderboard as a Markdown table and writes, beside the runs, leaderboard.md, leaderboard.csv,
val_acc_per_epoch.png and test_acc_vs_params.png (lab/tools/report.py).
"""

from pathlib import Path

from mnist_lab import cli
from mnist_lab.errors import UserError
from mnist_lab.tools.report import report


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise UserError(
            f"give one directory, not {len(argv)} arguments (usage: python report.py <sweep or outputs directory>)"
        )
    print(report(Path(argv[0])))
    return 0


if __name__ == "__main__":
    cli.run(main)
