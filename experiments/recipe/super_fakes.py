"""How many super-fakes must a model catch before the authentic side can be certified?

    .venv/bin/python experiments/recipe/super_fakes.py --model experiments/demo/model \
        --data experiments/demo/holdout/manifest.csv

Reads the item log-odds a card was certified on (its calib sample, in item-id order) and the
hold-out's manifest (which counterfeits are super-fakes), then certifies the authentic side
again as if the model had caught a share of the super-fakes (their log-odds set below every
other item's, the rest of the scores unchanged). Then, at thresholds that pass a given share
of the authentic items, the counterfeits passed with them: super-fakes and the rest. No model
is run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from run import passed_with_authentic_share  # this folder: the recipe grid's table uses it too

from touchstone.evaluation.policy import CertifiedSample, certify_items
from touchstone.evaluation.targets import Targets
from touchstone.model_card import load_model_dir


def calib_super_fakes(manifest: Path) -> np.ndarray:
    """Super-fake flags of the calib counterfeits, in the sample's order (sorted item ids)."""
    flags: dict[str, bool] = {}
    with manifest.open() as f:
        for row in csv.DictReader(f):
            if row["split"] == "calib" and row["label"] == "counterfeit":
                flags[row["item_id"]] = (
                    flags.get(row["item_id"], False) or row.get("super_fake") == "1"
                )
    return np.array([flags[item] for item in sorted(flags)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()

    card = load_model_dir(args.model).card
    sample = card.thresholds.sample
    authentic = np.asarray(sample.authentic, dtype=np.float64)
    counterfeit = np.asarray(sample.counterfeit, dtype=np.float64)
    super_fake = calib_super_fakes(args.data)
    if len(super_fake) != len(counterfeit):
        raise SystemExit("the card's calib sample does not match the manifest's calib counterfeits")
    n_items = len(authentic) + len(counterfeit)
    print(
        f"calib: {len(authentic)} authentic, {len(counterfeit)} counterfeit, "
        f"{super_fake.sum()} of them super-fakes"
    )
    print(
        "| super-fakes caught | authentic side | authentic items decided | calib items it decides |"
    )
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    order = rng.permutation(np.flatnonzero(super_fake))
    floor = min(authentic.min(), counterfeit.min()) - 1.0
    for share in (0.0, 0.5, 0.75, 0.9, 0.95, 1.0):
        moved = counterfeit.copy()
        moved[order[: round(share * len(order))]] = floor
        _, evidence = certify_items(
            CertifiedSample.of(
                np.r_[authentic, moved],
                np.r_[np.ones(len(authentic)), np.zeros(len(moved))],
                "calib",
            ),
            Targets(),  # the defaults: 0.5% / 2% at 10% to 30%, as the demo's card
        )
        side = evidence["false_authentic"]
        if side["supported"]:
            decided = side["decided"]
            print(
                f"| {share:.0%} | supported, bound {side['rate_bound']:.2%} | "
                f"{side['class_coverage']:.1%} | {decided / n_items:.1%} |"
            )
        else:
            print(f"| {share:.0%} | not supported | - | - |")

    print()
    print(
        "| authentic items passed (top share) | log-odds at least | counterfeits passed with them "
        "| super-fakes | other counterfeits |"
    )
    print("|---|---|---|---|---|")
    for share in (0.1, 0.2, 0.3, 0.4, 0.5):
        threshold, passed = passed_with_authentic_share(authentic, counterfeit, share)
        print(
            f"| {share:.0%} | {threshold:.2f} | {passed.sum()} | {(passed & super_fake).sum()} "
            f"| {(passed & ~super_fake).sum()} |"
        )


if __name__ == "__main__":
    main()
