"""Which modules a command loads: by presence, never by time (timings are bench's)."""

from __future__ import annotations

import json
import subprocess
import sys


def loaded_by(args: list[str], modules: tuple[str, ...]) -> tuple[int, list[str]]:
    """Run ``mentorpulse ARGS`` in a fresh interpreter: its exit code, and which of
    ``modules`` it imported."""
    probe = (
        "import json, sys\n"
        "from mentorpulse.cli import main\n"
        f"sys.argv = ['mentorpulse', *{args!r}]\n"
        "code = 0\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as done:\n"
        "    code = done.code or 0\n"
        f"print(json.dumps([code, sorted(m for m in {modules!r} if m in sys.modules)]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return code, loaded
