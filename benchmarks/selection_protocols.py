"""Selection protocols side by side (issue 14's evidence): the same sweep under ``budget``,
``label_free`` and ``oracle``; per budget the chosen trials, test accuracies, oracle gaps and the
method ranking under each rule.

Two real sweeps run through the CLI, on the same data, seeds and trial budget:

- ``eval.selection=budget`` (its search maximises RankMe), with ``eval.compare=[oracle,label_free]``:
  the three rules choose among the same RankMe-searched trials;
- ``eval.selection=oracle`` (its search maximises validation kNN, as before issue 14), with
  ``eval.compare=[budget,label_free]``: the three rules choose among oracle-searched trials.

Then the report's own tables (:mod:`sslsweep.analysis.protocols`) are printed for each. Figures
are what this run measured; on 2 CPU cores with the defaults (digits, demo sizes) it takes
about 10 minutes.

Usage::

    python benchmarks/selection_protocols.py                      # both sweeps, digits
    python benchmarks/selection_protocols.py --sweeps runs/a runs/b   # print tables of finished sweeps
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, emit, hardware, now, print_hardware

SWEEPS = {"budget": ["eval.selection=budget", "eval.compare=[oracle,label_free]"],
          "oracle": ["eval.selection=oracle", "eval.compare=[budget,label_free]"]}
DEFAULTS = ["experiment=demo", "method=[simclr,rotation,none]", "search.num_samples=8", "confirm.seeds=3"]


def run(name: str, storage: Path, overrides: list[str]) -> Path:
    """One sweep through the CLI; its directory."""
    cmd = [sys.executable, "-m", "sslsweep.cli", "sweep", *overrides, f"storage={storage}", f"name={name}"]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    if out.returncode != 0:
        raise SystemExit(f"sweep {name} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    found = sorted(storage.glob(f"{name}-*"))
    print(f"sweep {name}: {found[-1]} ({time.time() - t0:.0f} s)")
    return found[-1]


def tables(sweep_dir: Path) -> dict[str, Any]:
    """The comparison of one sweep, printed and returned."""
    import pandas as pd

    from sslsweep.analysis.io import headline_rule, open_sweep
    from sslsweep.analysis.protocols import choice_table, protocol_table, ranking_table

    sweep = open_sweep(str(sweep_dir), load_studies=False)
    head = headline_rule(sweep.manifest)
    prot = protocol_table(sweep.budget_all, head)
    prot = prot[prot["selection"] == "random"]
    rank = ranking_table(sweep.budget_all, head)
    rank = rank[rank["selection"] == "random"]
    chosen = choice_table(sweep.manifest.get("choices", []), head)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(f"\n== {sweep_dir.name}: headline rule {head}, search metric {sweep.manifest['metric']}")
        print("\nchosen trials (score: the rule's signal)")
        print(chosen[["method", "budget_label", "seed", "rule", "trial_id", "score", "signal", "differs_from_headline"]]
              .to_string(index=False))
        print("\ntest accuracy (mean over seeds, 95% CI half-width) and gap to the headline rule (paired)")
        view = prot.assign(acc=lambda d: (100 * d["mean"]).round(1), ci95=lambda d: (100 * d["ci"]).round(1),
                           gap_pts=lambda d: (100 * d["gap"]).round(1), gap_low=lambda d: (100 * d["ci_low"]).round(1),
                           gap_high=lambda d: (100 * d["ci_high"]).round(1))
        print(view[["budget_label", "protocol", "method", "rule", "acc", "ci95", "gap_pts", "gap_low", "gap_high",
                    "same_trial"]].to_string(index=False))
        print("\nmethod ranking per rule")
        print(rank[["budget_label", "protocol", "rule", "ranking", "ranking_changes"]].to_string(index=False))
    return {"sweep": str(sweep_dir), "headline": head, "protocols": prot.to_dict("records"),
            "rankings": rank.to_dict("records"), "choices": chosen.to_dict("records")}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", type=Path, default=None, help="where the sweeps go (default: a temporary directory)")
    p.add_argument("--overrides", nargs="*", default=DEFAULTS, help=f"Hydra overrides of both sweeps (default: {DEFAULTS})")
    p.add_argument("--sweeps", nargs="+", type=Path, default=None, help="print the tables of finished sweeps and exit")
    p.add_argument("--only", choices=sorted(SWEEPS), default=None, help="run one of the two sweeps")
    args = p.parse_args(argv)
    print_hardware(hardware())
    if args.sweeps:
        dirs = args.sweeps
    else:
        storage = args.storage or Path(tempfile.mkdtemp(prefix="selection-"))
        dirs = [run(f"sel-{rule}", storage, [*args.overrides, *extra]) for rule, extra in SWEEPS.items()
                if args.only in (None, rule)]
    result = {"benchmark": "selection_protocols", "date": now(), "overrides": args.overrides,
              "sweeps": [tables(d) for d in dirs]}
    emit(result)
    return result


if __name__ == "__main__":
    main()
