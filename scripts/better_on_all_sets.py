"""Is a candidate model better than the shipped one on every dataset of an `srfeat eval --json` file?

    srfeat eval --model default new_default.safetensors --data Set5 Set14 BSD100 --json eval.json
    python3 scripts/better_on_all_sets.py eval.json new_default default --higher psnr
    python3 scripts/better_on_all_sets.py eval.json new_gan gan --higher psnr --no-worse niqe

Models are named as `srfeat eval` names them (a checkpoint by its file stem). Prints each
dataset's numbers and exits 0 when, on every dataset, each `--higher` metric is strictly higher
and each `--no-worse` metric (lower is better, as NIQE) is not higher; else 1.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("json_file", help="records written by srfeat eval --json")
    parser.add_argument("candidate", help="the new model's name in the records")
    parser.add_argument("baseline", help="the shipped model's name in the records")
    parser.add_argument("--higher", nargs="*", default=["psnr"], help="metrics that must be strictly higher")
    parser.add_argument("--no-worse", nargs="*", default=[], help="lower-is-better metrics that must not rise")
    args = parser.parse_args()
    if not args.higher + args.no_worse:
        parser.error("no metric to compare: give --higher or --no-worse metrics")
    try:
        with open(args.json_file) as handle:
            records = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        sys.exit(f"error: cannot read {args.json_file}: {error}")
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and {"model", "dataset"} <= r.keys() for r in records
    ):
        sys.exit(f"error: {args.json_file} is not a list of records as srfeat eval --json writes")
    if not records:  # no dataset would pass every check: the candidate is not shown better on any
        sys.exit(f"error: {args.json_file} holds no records")
    scores = {(r["model"], r["dataset"]): r for r in records}
    datasets = sorted({r["dataset"] for r in records}, key=[r["dataset"] for r in records].index)
    better = True
    for dataset in datasets:
        for model in (args.candidate, args.baseline):
            if (model, dataset) not in scores:
                sys.exit(f"error: no record of {model} on {dataset} in {args.json_file}")
        new, old = scores[args.candidate, dataset], scores[args.baseline, dataset]
        verdicts = []
        for metric in args.higher + args.no_worse:
            if new.get(metric) is None or old.get(metric) is None:
                sys.exit(f"error: {metric} missing for {dataset} in {args.json_file}")
            ok = new[metric] > old[metric] if metric in args.higher else new[metric] <= old[metric]
            better &= ok
            verdicts.append(f"{metric} {new[metric]:.4f} vs {old[metric]:.4f} {'ok' if ok else 'WORSE'}")
        print(f"{dataset}: {'; '.join(verdicts)}")
    print(f"{args.candidate} {'is' if better else 'is not'} better than {args.baseline} on every dataset")
    return 0 if better else 1


if __name__ == "__main__":
    sys.exit(main())
