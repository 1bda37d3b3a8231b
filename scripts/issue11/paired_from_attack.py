#!/usr/bin/env python3
"""Issue 11's paired comparison on a `zol2l attack` results.json: ZO-LSTM against each baseline that ran.

    python scripts/issue11/paired_from_attack.py runs/replicate-mnist-5100/results.json [--json OUT]

For a `zol2l attack` run of images that no task part holds (e.g. `zol2l attack mnist --indices 5100:5200`, how the
MNIST and CIFAR-10 replications of docs/TRAINING.md were run; `zol2l evaluate TASK --range A:B`, added after them,
runs such a comparison with every criterion directly): per image, the loss averaged over its trials at steps 25,
50, 100 and 200, differenced against each baseline and judged at 2 standard errors (`criteria.paired_difference`,
as `zol2l evaluate` judges); the mean queries to a first success (over the attacks that succeeded) and the
success rates at the final iterate. Prints markdown.
"""
import argparse
import json
import sys

from zol2l_ext.criteria import QUERY_RATIO, paired_difference

STEPS = (25, 50, 100, 200)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--learned", default="zo-lstm")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        res = json.load(f)
    opts = res["optimizers"]
    if args.learned not in opts:
        raise SystemExit(f"{args.results}: {args.learned} did not run (ran: {', '.join(opts)})")
    base = [n for n in opts if n != args.learned]
    learned = opts[args.learned]["per_image"]
    out = {"results": args.results, "config": {k: res["config"].get(k) for k in ("dataset", "image_ids", "trials",
                                                                                   "steps", "q", "space")},
           "paired_loss": {}, "aggregate": {n: opts[n]["aggregate"] for n in opts}}
    print("| step | " + " | ".join(f"{args.learned} - {b}" for b in base) + " |")
    print("|---|" + "---|" * len(base))
    for s in STEPS:
        cells = []
        for b in base:
            d = paired_difference([im["loss_mean"][s] for im in learned],
                                  [im["loss_mean"][s] for im in opts[b]["per_image"]])
            out["paired_loss"].setdefault(str(s), {})[b] = d
            cells.append(f"{d['mean_diff']:+.3f} ± {d['se']:.3f} ({d['verdict']})")
        print(f"| {s} | " + " | ".join(cells) + " |")
    print("\n| optimizer | success (final) | mean queries to 1st success | mean final loss |\n|---|--:|--:|--:|")
    for n in opts:
        a = opts[n]["aggregate"]
        print(f"| {n} | {100 * a['success_rate']:.1f}% | {a['mean_queries_to_success']:.0f} | "
              f"{a['mean_final_loss']:.3f} |")
    best_q = min(opts[b]["aggregate"]["mean_queries_to_success"] for b in base)
    ratio = opts[args.learned]["aggregate"]["mean_queries_to_success"] / best_q
    best_s = max(opts[b]["aggregate"]["success_rate"] for b in base)
    out.update(query_ratio_to_best=ratio, success_not_lower=opts[args.learned]["aggregate"]["success_rate"] >= best_s)
    print(f"\nqueries: {ratio:.2f}x the best baseline's (criterion <= {QUERY_RATIO:g}); success rate "
          f"{'>=' if out['success_not_lower'] else '<'} the best baseline's")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
