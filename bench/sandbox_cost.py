"""Issue #18: what isolation costs per program, before and after the sandbox was hardened.

    python bench/sandbox_cost.py                    # 40 runs of each program on each side: about a minute
    python bench/sandbox_cost.py --runs 100 --before-ref main

"Before" is `fastmath/eval/sandbox.py` as it is at `--before-ref` (git show, loaded from a temp
dir as a module of its own); "after" is this checkout's. Both run the same programs in the same
process, alternately, one at a time, so the ratio compares them on the same machine under the same
load. Per program: wall time from `_run` call to result (bwrap, interpreter start, the program, the
reap). Not CPU time: before, bwrap's init reaped the interpreter and bwrap did not wait for its init,
so the kernel charged their CPU to no one this process could ask (RUSAGE_CHILDREN). Run as root, "after"
includes dropping privileges (and, for an interpreter only root can read, the staging step).
Writes bench/results/sandbox_cost-<device>.json, rewrites docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median
from types import ModuleType

if __package__ in (None, ""):  # `python bench/sandbox_cost.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from fastmath.eval import sandbox  # noqa: E402

PROGRAMS = {
    "print": "print(6 * 7)",
    "pot": (
        "from fractions import Fraction\nimport math\n"
        "eggs = 16 - 3 - 4\nprice = Fraction(2)\nprint(math.floor(eggs * price))"
    ),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--runs", type=int, default=40, help="runs of each program on each side (default 40)")
    parser.add_argument("--before-ref", default="main", help="git ref whose sandbox is 'before' (default main)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR, help="where the JSON result goes")
    parser.add_argument("--docs", type=Path, default=common.DOCS, help="markdown table rewritten from --results-dir")
    return parser.parse_args(argv)


def load_before(ref: str, tmp: Path) -> ModuleType:
    """The sandbox module as it is at `ref`, importable beside this checkout's."""
    try:
        source = subprocess.run(
            ["git", "show", f"{ref}:fastmath/eval/sandbox.py"], cwd=common.REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"cannot read fastmath/eval/sandbox.py at {ref!r} with git: {exc}") from None
    path = tmp / "sandbox_before.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("sandbox_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def one_run(module: ModuleType, code: str) -> float:
    """Wall seconds of one sandboxed run of `code`."""
    start = time.perf_counter()
    result = module._run(code, 10.0, 256, shutil.which(module.BWRAP))
    wall = time.perf_counter() - start
    if not result.ok:
        raise SystemExit(f"{module.__name__} failed to run {code!r}: {result.error}")
    return wall


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run, device = common.provenance(), common.device_info()
    with tempfile.TemporaryDirectory(prefix="sandbox-cost-") as tmp:
        sides = {f"before ({args.before_ref})": load_before(args.before_ref, Path(tmp)), "after": sandbox}
        for module in sides.values():  # the probe, and the launch set-up, stay out of the figures
            one_run(module, PROGRAMS["print"])
        samples: dict[tuple[str, str], list[float]] = {(s, p): [] for s in sides for p in PROGRAMS}
        for _ in range(args.runs):
            for program, code in PROGRAMS.items():
                for side, module in sides.items():  # alternately: both sides see the same load
                    samples[side, program].append(one_run(module, code))
    rows = {
        f"{side}, {program}": {
            "wall_ms_median": round(1000 * median(runs), 1),
            "wall_ms_mean": round(1000 * mean(runs), 1),
            "wall_ms_min": round(1000 * min(runs), 1),
        }
        for (side, program), runs in samples.items()
    }
    before = next(iter(sides))
    ratios = {
        program: {
            f"wall {figure} after/before": common.ratio(
                rows[f"after, {program}"][f"wall_ms_{figure}"], rows[f"{before}, {program}"][f"wall_ms_{figure}"]
            )
            for figure in ("median", "min")
        }
        for program in PROGRAMS
    }
    result = {
        "bench": "sandbox_cost",
        **run,
        "device": device,
        "runs_per_side": args.runs,
        "as_root": os.geteuid() == 0,
        "after_limits": ", ".join(sandbox._run("print(1)", 10.0, 256, shutil.which(sandbox.BWRAP)).limits),
        "per_program": rows,
        "ratio": ratios,
        "notes": [n for n in [common.contention_note(device, [{"load_average": common.load_average()}])] if n],
    }
    print(
        common.table(
            ["", "wall ms (median)", "wall ms (mean)", "wall ms (min)"], [[k, *v.values()] for k, v in rows.items()]
        )
    )
    print(common.table(["program", *next(iter(ratios.values()))], [[k, *v.values()] for k, v in ratios.items()]))
    print(*result["notes"], sep="\n")
    common.write_result(args.results_dir / f"sandbox_cost-{device['slug']}.json", result)
    common.write_docs(args.results_dir, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
