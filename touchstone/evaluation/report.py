"""The evaluation report: `metrics.json`, `report.md` and its plots (PNG), in one folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen: render to files
import matplotlib.pyplot as plt
import numpy as np

from touchstone.evaluation.evaluate import DecisionPolicy


def write_report(
    metrics: dict[str, Any], policy: DecisionPolicy, out: Path, title: str
) -> dict[str, Path]:
    """Write everything; return the paths (metrics, report, plots) for MLflow to log."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "reliability": _reliability(metrics, out / "reliability.png"),
        "risk_coverage": _risk_coverage(metrics, out / "risk_coverage.png"),
        "decisions": _decisions(metrics, policy, out / "decisions.png"),
    }
    saved = {k: v for k, v in metrics.items() if k != "item_p_authentic"}
    paths["metrics"] = out / "metrics.json"
    paths["metrics"].write_text(json.dumps(saved, indent=2, default=_plain) + "\n")
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


def _rate_text(rate: dict[str, Any]) -> str:
    if not rate["decided"]:
        return "- (none decided)"
    low, high = rate["ci95"]
    return f"{rate['rate']:.4f} ({rate['errors']}/{rate['decided']}; 95% CI {low:.4f}-{high:.4f})"


def decision_table(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows that `make demo` prints and the README shows."""
    d = metrics["decisions"]
    return [
        ("items", str(d["items"])),
        ("coverage (decided alone)", f"{d['coverage']:.3f}"),
        ("selective accuracy", _fmt(d["selective_accuracy"])),
        (
            "auto authentic / human / auto counterfeit",
            f"{d['auto_authentic']} / {d['human']} / {d['auto_counterfeit']}",
        ),
        (
            f"false-authentic rate (target {d['targets']['false_authentic']:.3%})",
            _rate_text(d["false_authentic"]),
        ),
        (
            f"false-counterfeit rate (target {d['targets']['false_counterfeit']:.1%})",
            _rate_text(d["false_counterfeit"]),
        ),
        (
            "item accuracy / ROC-AUC at p=0.5",
            f"{_fmt(metrics['item']['accuracy'])} / {_fmt(metrics['item']['auc'])}",
        ),
        (
            "photo accuracy / ROC-AUC",
            f"{_fmt(metrics['photo']['accuracy'])} / {_fmt(metrics['photo']['auc'])}",
        ),
        ("AURC (items)", _fmt(metrics["risk_coverage"]["aurc"], 4)),
    ]


def markdown(metrics: dict[str, Any], policy: DecisionPolicy, title: str) -> str:
    photo, item, d = metrics["photo"], metrics["item"], metrics["decisions"]
    lines = [f"# {title}", "", "## Decisions at the model's thresholds", ""]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in decision_table(metrics)]
    lines += [
        "",
        f"Thresholds: authentic at p >= {_fmt(d['authentic_at'], 4)}, counterfeit at "
        f"p <= {_fmt(d['counterfeit_at'], 4)} (- : never decided alone on that side).",
    ]
    for side in ("false_authentic", "false_counterfeit"):
        reason = policy.evidence.get(side, {}).get("reason")
        if reason:
            lines.append(f"- {side.replace('_', '-')}: {reason}.")
    lines += [
        "",
        "![decisions](decisions.png)",
        "",
        "| truth \\ route | authentic | human | counterfeit |",
        "|---|---|---|---|",
    ]
    for truth, row in d["confusion"].items():
        lines.append(f"| {truth} | {row['authentic']} | {row['human']} | {row['counterfeit']} |")
    lines += ["", "## Risk and coverage", "", "![risk-coverage](risk_coverage.png)", ""]
    lines += ["## Calibration", "", "| level | ECE | NLL | Brier |", "|---|---|---|---|"]
    for level, data in (("photo", photo), ("item", item)):
        for when in ("before", "after"):
            c = data[f"calibration_{when}"]
            lines.append(
                f"| {level}, {when} | {_fmt(c['ece'])} | {_fmt(c['nll'])} | {_fmt(c['brier'])} |"
            )
    lines += [
        "",
        f"Photo temperature {policy.temperature:.3f}; item rule: bias "
        f"{policy.aggregation.bias:.3f}, region weights "
        + ", ".join(
            f"{r} {w:.3f}"
            for r, w in zip(policy.aggregation.regions, policy.aggregation.weights, strict=True)
        )
        + " (before: every weight 1, no bias).",
        "",
        "![reliability](reliability.png)",
        "",
        "## Per region (photos)",
        "",
        "| region | photos | accuracy | ROC-AUC |",
        "|---|---|---|---|",
    ]
    for region in policy.aggregation.regions:
        if f"{region}/count" in photo:
            lines.append(
                f"| {region} | {photo[f'{region}/count']:.0f} | "
                f"{_fmt(photo[f'{region}/accuracy'])} | {_fmt(photo[f'{region}/auc'])} |"
            )
    lines += [
        "",
        "## Per category",
        "",
        "| category | photos | photo accuracy | photo ROC-AUC |"
        " items | item accuracy | item ROC-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for category, p in photo["by_category"].items():
        i = item["by_category"].get(category, {})
        lines.append(
            f"| {category} | {p['photos']} | {_fmt(p['accuracy'])} | {_fmt(p['auc'])} | "
            f"{i.get('items', 0)} | {_fmt(i.get('accuracy'))} | {_fmt(i.get('auc'))} |"
        )
    if metrics.get("counterfeits_by_cue_strength"):
        lines += [
            "",
            "## Counterfeits by cue strength (synthetic data)",
            "",
            "| strongest cue | counterfeits | super-fakes | passed as authentic | to a person"
            " | caught alone |",
            "|---|---|---|---|---|---|",
        ]
        for row in metrics["counterfeits_by_cue_strength"]:
            lines.append(
                f"| {row['cue_strength']} | {row['counterfeits']} | {row['super_fakes']} | "
                f"{row['passed_as_authentic']} | {row['to_human']} | {row['caught_alone']} |"
            )
        passed = metrics["passed_counterfeits"]
        lines += ["", f"Counterfeits passed as authentic: {len(passed)}."]
        for row in passed[:20]:
            lines.append(
                f"- {row['item_id']}: p {row['p_authentic']:.4f}, super-fake "
                f"{'yes' if row['super_fake'] else 'no'}, cue strength {_fmt(row['cue_strength'])}"
            )
    if photo.get("skipped"):
        lines += ["", f"{photo['skipped']} photo(s) could not be decoded and were left out."]
    return "\n".join(lines) + "\n"


def _reliability(metrics: dict[str, Any], out: Path) -> Path:
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, level in zip(axes, ("photo", "item"), strict=True):
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
        for when, marker in (("before", "o"), ("after", "s")):
            bins = metrics[level][f"reliability_{when}"]
            ece = metrics[level][f"calibration_{when}"]["ece"]
            axis.plot(
                [b["predicted"] for b in bins],
                [b["observed"] for b in bins],
                marker=marker,
                label=f"{when} calibration (ECE {ece:.3f})",
            )
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


def _risk_coverage(metrics: dict[str, Any], out: Path) -> Path:
    curve = metrics["risk_coverage"]
    d = metrics["decisions"]
    figure, axis = plt.subplots(figsize=(5.5, 4))
    axis.plot(curve["coverage"], curve["risk"], label=f"AURC {curve['aurc']:.4f}")
    if d["selective_accuracy"] is not None:
        axis.scatter(
            [d["coverage"]],
            [1 - d["selective_accuracy"]],
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


def _decisions(metrics: dict[str, Any], policy: DecisionPolicy, out: Path) -> Path:
    p = np.asarray(metrics["item_p_authentic"]["p"])
    y = np.asarray(metrics["item_p_authentic"]["label"])
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    bins = np.linspace(0, 1, 41)
    axis.hist(p[y > 0.5], bins=bins, alpha=0.6, label="authentic items")
    axis.hist(p[y < 0.5], bins=bins, alpha=0.6, label="counterfeit items")
    for value, name in (
        (policy.thresholds.authentic_at, "authentic at"),
        (policy.thresholds.counterfeit_at, "counterfeit at"),
    ):
        if value is not None:
            axis.axvline(value, color="black", linestyle="--")
            axis.text(value, axis.get_ylim()[1] * 0.9, f" {name}\n {value:.3f}", fontsize=8)
    axis.set(xlabel="item p(authentic), calibrated", ylabel="items", yscale="log")
    axis.set_title("item scores and the auto/human thresholds")
    axis.legend(loc="upper center")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
