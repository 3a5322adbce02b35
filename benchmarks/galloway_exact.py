"""Exact attack and certification of Galloway et al.'s convolutional BNN (model B) on MNIST.

Trains (or takes from the checkpoint cache) the B model of ``experiments/galloway2018/
table1.toml`` (``--model B64``, the ``--profile``'s training: paper = 15 epochs, seed 1234, the
authors' recipe) and, on the first ``--points`` test images, for every ε of ``--eps`` (the paper's
continuous problem, |p| <= ε, inputs in [0, 1]):

- PGD (40 steps of 2.5·ε/40 from a random start, on the logit margin, which does not vanish
  when B's softmax saturates): success = the prediction changes;
- certification (:class:`~bnnrobust.attacks.combinatorial.Certify`, backend ``cpsat-lp``,
  PGD's input first, then the interval and LP bounds, then the exact search): robust
  (proved), attacked (PGD's input or a perturbation found by the exact search makes another
  class reach the prediction; replayed in the float32 model) or unknown (time ran out);

and prints per ε: clean accuracy, certified robust accuracy (correct and proved), the exact
attack's successes, PGD's successes, the points only the exact search broke (PGD missed
them), what settled each decided point (interval / LP / exact search), and the median time;
then, across ε, the points attacked at some ε' <= ε and those proved robust at some ε'' >= ε
(each ε is certified on its own, so a search at a larger ε may miss what a smaller one found).
Every finished point is kept in ``--journal``; run the same command again after a kill and it
goes on from there; the same command with ``--report`` certifies nothing and prints the summary
of what the journal holds so far.

    python benchmarks/galloway_exact.py --points 100 --time-limit 180 --journal benchmarks/journals/b64.jsonl
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from journal import Journal, add_checkpoints_option, benchmark_network, codes

from bnnrobust.attacks.combinatorial import Certify
from bnnrobust.attacks.combinatorial.milp import SETTLED
from bnnrobust.attacks.pgd import PGD
from bnnrobust.data import load
from bnnrobust.experiments.measures.base import train_request
from bnnrobust.experiments.parse import load as load_spec
from bnnrobust.experiments.runner import code_version

SPEC = Path(__file__).resolve().parent.parent / "experiments" / "galloway2018" / "table1.toml"
EPS = [1 / 255, 2 / 255, 4 / 255, 0.005, 0.01]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="B64", help="a B model label of table1 (B64)")
    parser.add_argument("--profile", default="paper", help="training profile of table1 (paper)")
    parser.add_argument("--eps", type=float, nargs="+", default=EPS,
                        help="L∞ budgets on [0, 1] (1/255 2/255 4/255 0.005 0.01)")
    parser.add_argument("--points", type=int, default=100, help="first N test points (100)")
    parser.add_argument("--time-limit", type=float, default=180.0,
                        help="seconds of certification per point and ε (180)")
    parser.add_argument("--journal", type=Path, help="JSON-lines file of finished points")
    add_checkpoints_option(parser)
    parser.add_argument("--report", action="store_true",
                        help="certify nothing: print the summary of the points the journal "
                             "holds (a run still under way included)")
    args = parser.parse_args()
    if args.report and (args.journal is None or not args.journal.exists()):
        raise SystemExit(f"--report reads a journal: give --journal PATH of an existing one "
                         f"(got {args.journal or 'none'}).")
    # one thread per point, the gradient hint included: with more, PyTorch's thread pool
    # contends with the other workers and a 20-step hint on a 2×100 MLP took 2 s instead of ms
    torch.set_num_threads(1)

    spec = load_spec(SPEC)
    profile = spec.profile(args.profile)
    plans = {p.label: p for p in spec.model_plans(args.profile)}
    binary = [k for k, p in plans.items() if p.params.get("precision") == "binary"]
    if args.model not in binary:
        raise SystemExit(f"{args.model} is not a B (binary) model of {spec.name} in profile "
                         f"{args.profile}; B models: {', '.join(binary)}.")
    request = train_request(plans[args.model], profile, spec.dataset, profile.seeds[0])
    model = benchmark_network(request, args.checkpoints).model.eval()
    journal = Journal(args.journal, {"spec": spec.name, "model": args.model,
                                     "profile": args.profile, "time_limit": args.time_limit,
                                     "start": "pgd"})
    code = code_version()
    x, y = load(spec.dataset, "test", limit=args.points)
    with torch.no_grad():
        prediction = model(x).argmax(1)
    correct = prediction == y
    lines = []
    for eps in args.eps:
        key = f"{eps:.6g}"
        pgd = PGD(model, eps=eps, alpha=2.5 * eps / 40, steps=40, loss="margin", seed=0)
        # against the prediction, as certification is: success = the prediction changes
        found = pgd.run(x, prediction)
        pgd_success = found.success
        certify = Certify(model, eps=eps, backend="cpsat-lp", time_limit=args.time_limit)
        for i in range(args.points):
            name = f"{key} {i}"
            if name in journal.records or args.report:
                continue
            # PGD's input first: a point it breaks is settled without a search
            record = {**certify.run(x[i:i + 1], y[i:i + 1],
                                    start=found.x_adv[i:i + 1]).extra["points"][0],
                      "code": code}
            journal.add(name, record)
            print(f"ε={key} point {i:3d}: {record['status']:8s} by {record['method']} "
                  f"{record['seconds']:7.2f} s  PGD {'broke' if pgd_success[i] else 'missed'}",
                  flush=True)
        done = [i for i in range(args.points) if f"{key} {i}" in journal.records]
        if done:
            lines.append(_summary(eps, [journal.records[f"{key} {i}"] for i in done],
                                  correct[done], pgd_success[done], asked=args.points))
            print(lines[-1], flush=True)
    print(f"\n{args.model} ({args.profile} profile), first {args.points} MNIST test points, "
          f"{args.time_limit:g} s per point and ε, one thread")
    for line in lines:
        print(line)
    print("Across ε (each ε above is certified on its own; a perturbation within ε' is within "
          "every ε > ε', and a proof at ε covers every ε' < ε):")
    for line in _across(sorted(args.eps), journal.records, args.points):
        print(line)


def _across(eps: list[float], records: dict[str, dict], points: int) -> list[str]:
    """Per ε (ascending): the points attacked at some ε' <= ε and those proved robust at some
    ε'' >= ε, over the points the journal holds at every ε."""
    keys = [f"{e:.6g}" for e in eps]
    done = [i for i in range(points) if all(f"{k} {i}" in records for k in keys)]
    lines = []
    for n, e in enumerate(eps):
        broken = sum(any(records[f"{q} {i}"]["status"] == "attacked" for q in keys[:n + 1])
                     for i in done)
        proved = sum(any(records[f"{q} {i}"]["status"] == "robust" for q in keys[n:])
                     for i in done)
        lines.append(f"ε={e:.4f} ({e * 255:.2f}/255): attacked at some ε' <= ε {broken}, robust "
                     f"at some ε'' >= ε {proved}, of {len(done)} points")
    return lines


def _summary(eps: float, records: list[dict], correct: torch.Tensor, pgd_success: torch.Tensor,
             *, asked: int) -> str:
    """One ε's line over the points the journal holds (``asked`` were asked for; a partial run
    says how many are done, and its rates are over those)."""
    n = len(records)
    robust = [r["status"] == "robust" for r in records]
    attacked = [r["status"] == "attacked" for r in records]
    only_exact = sum(a and not bool(p) for a, p in zip(attacked, pgd_success, strict=True))
    by = {m: sum(r["method"] == m for r in records) for m in SETTLED}
    certified = sum(r and bool(c) for r, c in zip(robust, correct, strict=True))
    return (f"ε={eps:.4f} ({eps * 255:.2f}/255){'' if n == asked else f' ({n} of {asked} done)'}: "
            f"clean {float(correct.float().mean()):.0%}, certified robust accuracy "
            f"{certified / n:.0%} (robust {sum(robust)}, attacked exactly {sum(attacked)}, "
            f"unknown {n - sum(robust) - sum(attacked)}); PGD broke {int(pgd_success.sum())}; "
            f"broken only by the exact search {only_exact}; settled by PGD's input "
            f"{by['start']}, interval {by['interval']}, LP {by['lp']}, exact {by['exact']}; "
            f"median {statistics.median(r['seconds'] for r in records):.1f} s; code "
            f"{codes(records)}")


if __name__ == "__main__":
    main()
