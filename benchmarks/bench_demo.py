"""Time `synthloop demo`: a cold run (fresh work directory), a warm run (every stage cached)
and the candidate-equals-baseline run, plus the reference models' throughput.

    python benchmarks/bench_demo.py            # prints wall times; acceptance: cold <= 60 s

Each run is a real `synthloop demo` subprocess (imports included, as a user sees it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_demo(workdir: Path, *extra: str) -> tuple[float, int, str, str]:
    env = dict(os.environ, SYNTHLOOP_PROGRESS="0")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "synthloop.cli", "demo", "--workdir",
                           str(workdir), *extra], capture_output=True, text=True, env=env,
                          timeout=900)
    return time.perf_counter() - t0, proc.returncode, proc.stdout, proc.stderr


def stage_times(stderr: str) -> list[str]:
    out = []
    for line in stderr.splitlines():
        m = re.match(r"\[(.+?)\] (ran|reused).*\(([0-9.]+) s\)", line)
        if m:
            out.append(f"{m.group(1)} {m.group(2)} {m.group(3)} s")
    return out


def model_throughput(n: int = 3000) -> dict[str, float]:
    from synthloop.demo import data_dir, v1, v2
    from synthloop.evalsets import open_evalset
    from synthloop.generate import GenerateOptions, generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(data_dir() / "spec.yaml", Path(tmp) / "ev",
                 GenerateOptions(seed=3, sessions=n, progress=False))
        cases = open_evalset(Path(tmp) / "ev").cases()
    rates = {}
    for fn in (v1, v2):
        fn(cases[0])  # fit the TF-IDF index outside the timing
        t0 = time.perf_counter()
        for c in cases:
            fn(c)
        rates[fn.__name__] = len(cases) / (time.perf_counter() - t0)
    return rates


def main() -> int:
    cpu = os.cpu_count()
    print(f"machine: {cpu} CPUs, load average {os.getloadavg()[0]:.1f} (a shared machine "
          "inflates wall times)")
    with tempfile.TemporaryDirectory(prefix="synthloop-bench-demo-") as tmp:
        work = Path(tmp) / "demo"
        for label, extra in (("cold (nothing cached)", ()), ("warm (all stages cached)", ()),
                             ("--candidate v1 (baseline vs itself)", ("--candidate", "v1"))):
            wall, code, out, err = run_demo(work, *extra)
            verdict = next((ln for ln in out.splitlines() if ln.startswith("lumen-demo:")), "?")
            print(f"synthloop demo {label}: {wall:.1f} s, exit {code}")
            print(f"  {verdict}")
            for s in stage_times(err):
                print(f"    {s}")
    for name, rate in model_throughput().items():
        print(f"reference model {name}: {rate:,.0f} cases/s (one thread)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
