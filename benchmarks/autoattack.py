"""Our AutoAttack ensemble against torchattacks' on the Galloway models, and what gradient
masking hides (the audit issue's acceptance).

For each model of ``experiments/galloway2018/table1.toml`` named in ``--models`` (the
``--profile``'s training; quick: the demo's checkpoints) and each ε, on the first ``--points``
MNIST test images:

- ours: :func:`bnnrobust.evaluate.autoattack` (standard: APGD-CE, APGD-T, FAB-T, Square, 100
  steps, 5,000 queries, as a cascade);
- torchattacks 3.5.1 ``AutoAttack(version="standard")`` as it ships (APGD, APGD-T and FAB-T at
  its default 10 steps; Square 5,000 queries with its rescaled schedule);
- torchattacks configured as AutoAttack's paper runs it (``MultiAttack`` of APGD and APGD-T
  at 100 steps, FAB-T at 100 steps, Square 5,000 queries, schedule not rescaled): like with
  like for our ensemble;
- with ``--audit``: our audit's worst case (``--suite both``: AutoAttack's ensemble, then our
  adaptive, transfer and CW attacks), which must never be above AutoAttack's;
- with ``--square``: FGSM, PGD-40 and Square alone (Square needs no gradient: what it breaks
  and the gradient attacks miss is what gradient masking hides).

It prints robust accuracy (%) and seconds for each, and the time of our ensemble divided by
torchattacks' in the same run. Like with like: our ensemble attacks the points in one batch
(``--batch-size``, default all of them), as torchattacks' attacks do with the batch they are
given, and each model has one untimed forward and backward pass before the first timing.
Every model is attacked on one process with ``torch.set_num_threads(--threads)``; run nothing
else beside it when timing.

Every finished (model, ε) row is kept in ``--journal``; run the same command again after a kill
and it goes on from there (``--report``: print what the journal holds, compute nothing).

    python benchmarks/autoattack.py --models A64 B64 C64 --points 500 --audit --square \\
        --journal benchmarks/journals/autoattack.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torchattacks
from journal import Journal

from bnnrobust.data import load
from bnnrobust.evaluate import accuracy_under_attack, autoattack
from bnnrobust.evaluate.audit import audit
from bnnrobust.experiments.measures.base import train_request, trained_model
from bnnrobust.experiments.parse import load as load_spec
from bnnrobust.experiments.runner import code_version

SPEC = Path(__file__).resolve().parent.parent / "experiments" / "galloway2018" / "table1.toml"


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``."""
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def robust_accuracy(model, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy on torchattacks' output (its attacks keep x where they fail)."""
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def warm_up(model, x: torch.Tensor) -> None:
    """One untimed forward and input-gradient pass over ``x``: the first pass through a model
    allocates its kernels' buffers, which would otherwise be charged to whichever attack runs
    first."""
    x = x.clone().requires_grad_(True)
    model(x).sum().backward()
    model.zero_grad(set_to_none=True)


def torchattacks_paper(model, eps: float) -> torchattacks.MultiAttack:
    """torchattacks' attacks with AutoAttack's paper settings (fra31/auto-attack standard)."""
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, eps=eps, steps=100, loss="ce", n_restarts=1, seed=0),
        torchattacks.APGDT(model, eps=eps, steps=100, n_classes=10, n_restarts=1, seed=0),
        torchattacks.FAB(model, eps=eps, steps=100, multi_targeted=True, n_classes=10,
                         n_restarts=1, seed=0),
        torchattacks.Square(model, eps=eps, n_queries=5000, n_restarts=1,
                            resc_schedule=False, seed=0)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["A64", "B64", "C64"],
                        help="model labels of galloway2018/table1 (A64 B64 C64)")
    parser.add_argument("--profile", default="quick", help="training profile (quick)")
    parser.add_argument("--points", type=int, default=500, help="first N test images (500)")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3],
                        help="L∞ budgets (0.1 0.2 0.3)")
    parser.add_argument("--audit", action="store_true",
                        help="also our audit's worst case (--suite both)")
    parser.add_argument("--square", action="store_true",
                        help="also FGSM, PGD-40 and Square alone")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="our ensemble's batch (default: all points in one batch, as "
                             "torchattacks attacks the batch it is given; fra31 runs 250)")
    parser.add_argument("--journal", type=Path, help="JSON-lines file of finished rows")
    parser.add_argument("--report", action="store_true",
                        help="compute nothing: print the rows the journal holds")
    args = parser.parse_args()
    if args.report and (args.journal is None or not args.journal.exists()):
        raise SystemExit("--report reads a journal: give --journal PATH of an existing one.")
    torch.set_num_threads(args.threads)
    spec = load_spec(SPEC)
    profile = spec.profile(args.profile)
    plans = {p.label: p for p in spec.model_plans(args.profile)}
    unknown = [m for m in args.models if m not in plans]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown} in {spec.name} ({args.profile}); "
                         f"models: {', '.join(plans)}.")
    x, y = load(spec.dataset, "test", limit=args.points + 150)
    # the audit's substitute is seeded with 150 other test images, after the attacked ones
    seeds, seed_labels, x, y = x[args.points:], y[args.points:], x[:args.points], y[:args.points]
    batch = args.batch_size or args.points
    journal = Journal(args.journal, {"spec": spec.name, "profile": args.profile,
                                     "points": args.points, "threads": args.threads,
                                     "audit": args.audit, "square": args.square,
                                     "batch_size": batch, "warm_up": True})
    rows = []
    print(f"code {code_version()}, torchattacks {torchattacks.__version__}, {args.points} "
          f"points, {args.threads} threads", flush=True)
    for label in args.models:
        todo = [e for e in args.eps if f"{label} {e:g}" not in journal.records]
        rows += [journal.records[f"{label} {e:g}"] for e in args.eps if e not in todo]
        if not todo or args.report:
            continue
        request = train_request(plans[label], profile, spec.dataset, profile.seeds[0])
        model = trained_model(request, device="cpu", data_root=None, cache_dir=None,
                              progress=True).model.eval()
        warm_up(model, x)
        for eps in todo:
            row = {"model": label, "eps": eps, "code": code_version()}
            ours, row["ours_s"] = timed(autoattack, model, x, y, eps=eps, batch_size=batch)
            row["ours"] = ours.accuracy
            row["ours_after"] = ours.accuracy_after
            literal = torchattacks.AutoAttack(model, eps=eps, version="standard", n_classes=10,
                                              seed=0)
            adv, row["ta_standard_s"] = timed(literal, x, y)
            row["ta_standard"] = robust_accuracy(model, adv, y)
            adv, row["ta_paper_s"] = timed(torchattacks_paper(model, eps), x, y)
            row["ta_paper"] = robust_accuracy(model, adv, y)
            if args.audit:
                result, row["audit_s"] = timed(
                    audit, model, torch.cat([seeds, x]), torch.cat([seed_labels, y]),
                    eps=[eps], points=len(x), holdout=len(seeds), progress=False)
                row["audit_worst"] = result.worst[eps]
                row["audit_autoattack"] = result.autoattack[eps]
            if args.square:
                for name, options in (("fgsm", {}), ("pgd", {"steps": 40, "alpha": 0.01}),
                                      ("square", {})):
                    out = accuracy_under_attack(model, x, y, attack=name, eps=[eps], **options)
                    row[f"{name}_alone"] = out[0].accuracy
            rows.append(row)
            journal.add(f"{label} {eps:g}", row)
            print(json.dumps(row), flush=True)
    print()
    print("| model | ε | ours | torchattacks standard | torchattacks paper settings | ours s "
          "| standard s | paper s | ours ÷ standard | ours ÷ paper |"
          + (" audit worst |" if args.audit else "")
          + (" FGSM | PGD-40 | Square |" if args.square else ""))
    print("|---" * (10 + args.audit + 3 * args.square) + "|")
    for r in rows:
        line = (f"| {r['model']} | {r['eps']:g} | {100 * r['ours']:.1f} | "
                f"{100 * r['ta_standard']:.1f} | {100 * r['ta_paper']:.1f} | {r['ours_s']:.1f} | "
                f"{r['ta_standard_s']:.1f} | {r['ta_paper_s']:.1f} | "
                f"{r['ours_s'] / r['ta_standard_s']:.2f} | {r['ours_s'] / r['ta_paper_s']:.2f} |")
        if args.audit:
            line += f" {100 * r['audit_worst']:.1f} |"
        if args.square:
            line += "".join(f" {100 * r[f'{n}_alone']:.1f} |" for n in ("fgsm", "pgd", "square"))
        print(line)


if __name__ == "__main__":
    main()
