"""Time from launching `parley` to the window being shown, and what was imported by then.

Launches the real command several times (offscreen unless a display is set) and prints
the median and worst wall time, against a bare Python start-up in the same run as the
baseline a user cannot avoid. Goal: under 2 s.

Run: ``.venv/bin/python benchmarks/startup_time.py``
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(runs: int = 5) -> None:
    shown, bare = [], []
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, PARLEY_HOME=home, PARLEY_EXIT_AFTER_SHOW="1", PARLEY_LOAD_PLUGINS="")
        if not env.get("DISPLAY"):
            env["QT_QPA_PLATFORM"] = "offscreen"
        for _ in range(runs):
            start = time.time()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.time() - start)
            env["PARLEY_LAUNCHED_AT"] = str(time.time())
            out = subprocess.run([str(Path(sys.executable).parent / "parley")], env=env, capture_output=True,
                                 text=True, check=True, cwd=ROOT).stdout
            line = next(line for line in out.splitlines() if line.startswith("window shown after"))
            shown.append(float(line.split()[3]))
        print(f"window shown after: median {statistics.median(shown):.3f} s, worst {max(shown):.3f} s "
              f"over {runs} launches (goal < 2 s)")
        print(f"bare `python -c pass`: median {statistics.median(bare):.3f} s; "
              f"ratio {statistics.median(shown) / statistics.median(bare):.1f}x")
        print(f"last launch: {line}")


if __name__ == "__main__":
    main()
