"""The evaluation report: `metrics.json`, `report.md` and its plots (PNG), in one folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen: render to files
import matplotlib.pyplot as plt
import numpy as np

from touchstone.evaluation.calibration import CalibrationMeasures, ReliabilityBin
from touchstone.evaluation.policy import DecisionPolicy
from touchstone.evaluation.results import ErrorRate, Evaluation

LOG_ODDS_SHOWN = 20.0


def write_report(
    metrics: Evaluation, policy: DecisionPolicy, out: Path, title: str
) -> dict[str, Path]:
    """Write everything; return the paths (metrics, report, plots) for MLflow to log."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "reliability": _reliability(metrics, out / "reliability.png"),
        "risk_coverage": _risk_coverage(metrics, out / "risk_coverage.png"),
        "decisions": _decisions(metrics, policy, out / "decisions.png"),
    }
    paths["metrics"] = out / "metrics.json"
    paths["metrics"].write_text(json.dumps(metrics.to_json(), indent=2, default=_plain) + "\n")
    paths["report"] = out / "report.md"
    paths["report"].write_text(markdown(metrics, policy, title), encoding="utf-8")
    return paths


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value)}")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _rate_text(rate: ErrorRate) -> str:
    if not rate.decided:
        return "- (none decided)"
    low, high = rate.ci95
    return f"{rate.rate:.4f} ({rate.errors}/{rate.decided}; 95% CI {low:.4f}-{high:.4f})"


def decision_table(metrics: Evaluation) -> list[tuple[str, str]]:
    """The rows that `make demo` prints and docs/evaluation.md shows."""
    d, item, photo = metrics.decisions, metrics.item, metrics.photo.overall
    low, high = d.mixed.counterfeit_share
    return [
        ("items", str(d.items)),
        ("coverage (decided alone)", f"{d.coverage:.3f}"),
        ("selective accuracy", _fmt(d.selective_accuracy)),
        (
            "auto authentic / human / auto counterfeit",
            f"{d.auto_authentic} / {d.human} / {d.auto_counterfeit}",
        ),
        ("to people for a missing region", str(d.missing_region)),
        (
            f"false-authentic rate (target {d.targets.false_authentic:.3%})",
            _rate_text(d.false_authentic),
        ),
        (f"  at {high:.0%} counterfeit share", _fmt(d.mixed.false_authentic_at_high, 4)),
        (
            f"false-counterfeit rate (target {d.targets.false_counterfeit:.1%})",
            _rate_text(d.false_counterfeit),
        ),
        (f"  at {low:.0%} counterfeit share", _fmt(d.mixed.false_counterfeit_at_low, 4)),
        ("item accuracy / ROC-AUC at p=0.5", f"{_fmt(item.accuracy)} / {_fmt(item.auc)}"),
        ("photo accuracy / ROC-AUC", f"{_fmt(photo.accuracy)} / {_fmt(photo.auc)}"),
        ("AURC (items)", _fmt(metrics.risk_coverage.aurc, 4)),
    ]


def certification_table(policy: DecisionPolicy) -> list[tuple[str, str]]:
    """Each side of the certification: supported or not, and what would support it."""
    share = policy.targets.counterfeit_share
    sources = policy.evidence.get("sources", {})
    rows = [
        ("certified for counterfeit share", f"{share.low:.0%} to {share.high:.0%} of traffic"),
        (
            "certified on",
            ", ".join(
                f"{name}: {c.get('authentic', 0)} authentic + {c.get('counterfeit', 0)} counterfeit"
                for name, c in sources.items()
            )
            or "-",
        ),
    ]
    for side, decides in (("false_authentic", "authentic"), ("false_counterfeit", "counterfeit")):
        evidence = policy.evidence.get(side, {})
        if evidence.get("supported"):
            rows.append(
                (
                    f"{decides} side",
                    f"at log-odds {evidence['threshold']:+.3f}: decides "
                    f"{evidence['class_coverage']:.1%} of {decides} items; rate bound "
                    f"{evidence['rate_bound']:.3%} (target {evidence['target']:.2%})",
                )
            )
        else:
            rows.append((f"{decides} side", "not supported: " + _plan_text(evidence)))
    return rows


def _plan_text(evidence: dict[str, Any]) -> str:
    plan = evidence.get("plan") or {}
    if not plan:
        return "no evidence"
    if not plan.get("reachable"):
        return plan.get("reason", "not reachable")
    return (
        f"about {plan['extra_items']:,} more labelled items ({plan['extra_authentic']:,} "
        f"authentic, {plan['extra_counterfeit']:,} counterfeit) at the present error rates "
        f"would support it, deciding {plan['class_coverage']:.0%} of its class"
    )


def markdown(metrics: Evaluation, policy: DecisionPolicy, title: str) -> str:
    lines = [f"# {title}", ""]
    lines += ["## Certification", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in certification_table(policy)] + [""]
    lines += _decisions_section(metrics, policy)
    lines += ["", "## Risk and coverage", "", "![risk-coverage](risk_coverage.png)", ""]
    lines += _calibration_section(metrics, policy)
    lines += _regions_section(metrics, policy)
    lines += _categories_section(metrics)
    if metrics.counterfeits_by_cue_strength:
        lines += _cue_strength_section(metrics)
    skipped = metrics.photo.skipped
    if skipped:
        lines += ["", f"{skipped} photo(s) could not be decoded and were left out."]
    return "\n".join(lines) + "\n"


def _decisions_section(metrics: Evaluation, policy: DecisionPolicy) -> list[str]:
    d = metrics.decisions
    lines = ["## Decisions at the model's thresholds", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in decision_table(metrics)]
    lines += [
        "",
        f"Thresholds on the item's log-odds: authentic at >= {_fmt(d.authentic_at, 4)}, "
        f"counterfeit at <= {_fmt(d.counterfeit_at, 4)} (- : never decided alone on that side). "
        "The rates at either end of the declared share come from this split's per-class "
        "shares.",
    ]
    lines += [
        "",
        "![decisions](decisions.png)",
        "",
        "| truth \\ route | authentic | human | counterfeit |",
        "|---|---|---|---|",
    ]
    for truth, row in d.confusion.items():
        lines.append(f"| {truth} | {row['authentic']} | {row['human']} | {row['counterfeit']} |")
    return lines


def _calibration_section(metrics: Evaluation, policy: DecisionPolicy) -> list[str]:
    lines = ["## Calibration", "", "| level | ECE | NLL | Brier |", "|---|---|---|---|"]
    for level, check in (("photo", metrics.photo.calibration), ("item", metrics.item.calibration)):
        for when, c in (("before", check.before), ("after", check.after)):
            lines.append(f"| {level}, {when} | {_fmt(c.ece)} | {_fmt(c.nll)} | {_fmt(c.brier)} |")
    aggregation = policy.aggregation
    weights = ", ".join(
        f"{r} {w:.3f}" for r, w in zip(aggregation.regions, aggregation.weights, strict=True)
    )
    lines += [
        "",
        f"Photo temperature {policy.temperature:.3f}; item rule: bias "
        f"{aggregation.bias:.3f}, region weights {weights} (before: every weight 1, no bias).",
        "",
        "![reliability](reliability.png)",
        "",
    ]
    return lines


def _regions_section(metrics: Evaluation, policy: DecisionPolicy) -> list[str]:
    lines = [
        "## Per region (photos)",
        "",
        "| region | photos | accuracy | ROC-AUC |",
        "|---|---|---|---|",
    ]
    for region in policy.aggregation.regions:
        measures = metrics.photo.by_region.get(region)
        if measures is not None:
            lines.append(
                f"| {region} | {measures.count:.0f} | "
                f"{_fmt(measures.accuracy)} | {_fmt(measures.auc)} |"
            )
    return lines


def _categories_section(metrics: Evaluation) -> list[str]:
    lines = [
        "",
        "## Per category",
        "",
        "| category | photos | photo accuracy | photo ROC-AUC |"
        " items | item accuracy | item ROC-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for category, p in metrics.photo.by_category.items():
        i = metrics.item.by_category.get(category)
        items = f"{i.items} | {_fmt(i.accuracy)} | {_fmt(i.auc)}" if i else "0 | - | -"
        lines.append(f"| {category} | {p.photos} | {_fmt(p.accuracy)} | {_fmt(p.auc)} | {items} |")
    return lines


def _cue_strength_section(metrics: Evaluation) -> list[str]:
    lines = [
        "",
        "## Counterfeits by cue strength (synthetic data)",
        "",
        "| strongest cue | counterfeits | super-fakes | passed as authentic | to a person"
        " | caught alone |",
        "|---|---|---|---|---|---|",
    ]
    for row in metrics.counterfeits_by_cue_strength:
        lines.append(
            f"| {row.cue_strength} | {row.counterfeits} | {row.super_fakes} | "
            f"{row.passed_as_authentic} | {row.to_human} | {row.caught_alone} |"
        )
    passed = metrics.passed_counterfeits
    lines += ["", f"Counterfeits passed as authentic: {len(passed)}."]
    for c in passed[:20]:
        lines.append(
            f"- {c.item_id}: p {c.p_authentic:.4f}, super-fake "
            f"{'yes' if c.super_fake else 'no'}, cue strength {_fmt(c.cue_strength)}"
        )
    return lines


def _reliability(metrics: Evaluation, out: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    levels = (("photo", metrics.photo.calibration), ("item", metrics.item.calibration))
    for axis, (level, check) in zip(axes, levels, strict=True):
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
        _reliability_curve(axis, "before", "o", check.reliability_before, check.before)
        _reliability_curve(axis, "after", "s", check.reliability_after, check.after)
        axis.set(
            xlabel="predicted p(authentic)",
            ylabel="observed share authentic",
            title=f"{level}s",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _reliability_curve(
    axis: Any, when: str, marker: str, bins: list[ReliabilityBin], measures: CalibrationMeasures
) -> None:
    axis.plot(
        [b.predicted for b in bins],
        [b.observed for b in bins],
        marker=marker,
        label=f"{when} calibration (ECE {measures.ece:.3f})",
    )


def _risk_coverage(metrics: Evaluation, out: Path) -> Path:
    curve, d = metrics.risk_coverage, metrics.decisions
    figure, axis = plt.subplots(figsize=(5.5, 4))
    axis.plot(curve.coverage, curve.risk, label=f"AURC {curve.aurc:.4f}")
    if d.selective_accuracy is not None:
        axis.scatter(
            [d.coverage],
            [1 - d.selective_accuracy],
            color="red",
            zorder=3,
            label="at the model's thresholds",
        )
    axis.set(xlabel="coverage (items decided alone)", ylabel="error rate on those", xlim=(0, 1))
    axis.set_title("risk against coverage (items, most confident first)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _decisions(metrics: Evaluation, policy: DecisionPolicy, out: Path) -> Path:
    # Log-odds, as the thresholds compare them; the tails are clipped for display only.
    z = np.clip(metrics.item_p_authentic.log_odds, -LOG_ODDS_SHOWN, LOG_ODDS_SHOWN)
    y = metrics.item_p_authentic.labels
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    bins = np.linspace(-LOG_ODDS_SHOWN, LOG_ODDS_SHOWN, 61)
    axis.hist(z[y > 0.5], bins=bins, alpha=0.6, label="authentic items")
    axis.hist(z[y < 0.5], bins=bins, alpha=0.6, label="counterfeit items")
    for value, name in (
        (policy.thresholds.authentic_at, "authentic at"),
        (policy.thresholds.counterfeit_at, "counterfeit at"),
    ):
        if value is not None:
            axis.axvline(value, color="black", linestyle="--")
            axis.text(value, axis.get_ylim()[1] * 0.9, f" {name}\n {value:.3f}", fontsize=8)
    axis.set(xlabel="item log-odds of authentic", ylabel="items", yscale="log")
    axis.set_title("item scores and the auto/human thresholds")
    axis.legend(loc="upper center")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
