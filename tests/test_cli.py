import subprocess
import sys


def test_drface_help_lists_every_subcommand():
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("serve", "prepare", "pack", "train", "eval", "export"):
        assert command in result.stdout
