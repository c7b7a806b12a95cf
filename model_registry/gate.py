"""Promotion gate: may a candidate version replace the champion?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GatePolicy:
    """Absolute floors, plus how much worse than the champion a candidate may be."""

    min_accuracy: float = 0.85
    min_class_recall: float = 0.50
    tolerance: float = 0.005
    # held-out accuracy on labelled real photos: a few hundred photos, so a wider margin
    real_photo_tolerance: float = 0.02
    # candidate vs champion re-scored on the current holdout (paired): refused only when
    # even the upper one-sided bound (z) of the accuracy difference is below -tolerance
    holdout_tolerance: float = 0.01
    holdout_z: float = 1.645


@dataclass
class GateDecision:
    """Outcome of the gate.

    `reasons` lists why the gate refused (passed=False) or, when it passed, what
    it checked. `forced` is True when promote() moved the alias despite a refusal.
    """

    passed: bool
    candidate: str
    champion: str | None
    reasons: list[str]
    candidate_accuracy: float
    champion_accuracy: float | None
    forced: bool = False


def evaluate_gate(
    candidate: str,
    candidate_meta: dict[str, Any],
    champion: str | None,
    champion_meta: dict[str, Any] | None,
    policy: GatePolicy,
    *,
    class_names: Sequence[str] = (),
    holdout: dict[str, Any] | None = None,
) -> GateDecision:
    """Apply `policy` to validated metadata of the candidate and (if any) the champion.

    class_names name the classes of the per-class recall list in the reasons.
    holdout: both versions scored by the caller on the same held-out photos ("photos",
    "champion", "candidate_accuracy", "champion_accuracy", "candidate_only_correct",
    "champion_only_correct"). With it, the candidate is compared to the champion there;
    the evaluation set's accuracy then only has to meet the floors."""
    metrics = candidate_meta["metrics"]
    accuracy = float(metrics["accuracy"])
    champion_accuracy = None
    if champion_meta is not None:
        champion_accuracy = float(champion_meta["metrics"]["accuracy"])
    decision = GateDecision(True, candidate, champion, [], accuracy, champion_accuracy)
    if candidate == champion:
        decision.reasons.append(f"{candidate} is already champion: nothing to do")
        return decision

    failures: list[str] = []
    passes: list[str] = []
    _check(accuracy >= policy.min_accuracy,
           f"accuracy {accuracy:.4f} {{}} floor {policy.min_accuracy:.4f}", passes, failures)
    low = [
        f"{_class_name(i, class_names)} {recall:.4f}"
        for i, recall in enumerate(metrics["per_class_recall"])
        if recall < policy.min_class_recall
    ]
    if low:
        failures.append(f"recall below floor {policy.min_class_recall:.4f}: {', '.join(low)}")
    else:
        passes.append(f"every class recall >= floor {policy.min_class_recall:.4f}")

    if champion_meta is not None:
        ours = candidate_meta["eval_data_fingerprint"]
        theirs = champion_meta["eval_data_fingerprint"]
        if ours != theirs:
            failures.append(
                f"evaluated on different data: candidate eval_data_fingerprint {ours!r} "
                f"!= champion {champion} eval_data_fingerprint {theirs!r}"
            )
        elif holdout is not None:
            _check_holdout(holdout, champion, policy, passes, failures)
        else:
            _check(
                accuracy >= champion_accuracy - policy.tolerance,
                f"accuracy {accuracy:.4f} {{}} champion {champion_accuracy:.4f} "
                f"- {policy.tolerance:g}",
                passes,
                failures,
            )
        if holdout is None:
            _check_real_photos(metrics.get("real_photos"), champion,
                               champion_meta["metrics"].get("real_photos"), policy, passes,
                               failures)
    decision.passed = not failures
    decision.reasons = failures or passes
    return decision


def _check_real_photos(ours: dict | None, champion: str | None, theirs: dict | None,
                       policy: GatePolicy, passes: list[str], failures: list[str]) -> None:
    """A champion measured on real photos is only replaced by one measured on them too.

    Held-out accuracies are compared when both were measured on the same photos; a new
    photo set (labelled photos added) cannot be compared and is let through, said so.
    """
    if not theirs:
        return
    if not ours:
        failures.append(f"champion {champion} was measured on real photos "
                        f"({theirs['photos']}); the candidate was not")
    elif ours.get("fingerprint") != theirs.get("fingerprint"):
        passes.append(f"real photos differ from the champion's ({ours['photos']} vs "
                      f"{theirs['photos']}): not compared")
    else:
        _check(ours["accuracy"] >= theirs["accuracy"] - policy.real_photo_tolerance,
               f"real-photo accuracy {ours['accuracy']:.4f} {{}} champion "
               f"{theirs['accuracy']:.4f} - {policy.real_photo_tolerance:g}", passes, failures)


def _check_holdout(holdout: dict, champion: str | None, policy: GatePolicy,
                   passes: list[str], failures: list[str]) -> None:
    """Candidate vs champion on the same held-out photos (both scored by the caller).

    Paired: the standard error comes from the photos only one of the two gets right.
    The candidate fails when even the upper one-sided bound of its accuracy difference is
    below -holdout_tolerance, i.e. when it is worse beyond noise and tolerance.
    """
    if holdout.get("champion") != champion:
        failures.append(f"holdout scores are for champion {holdout.get('champion')}, "
                        f"the champion is {champion}")
        return
    n = int(holdout["photos"])
    ours, theirs = holdout["candidate_only_correct"], holdout["champion_only_correct"]
    difference = (ours - theirs) / n
    se = math.sqrt(max(ours + theirs - (ours - theirs) ** 2 / n, 0.0)) / n
    upper = difference + policy.holdout_z * se
    _check(upper >= -policy.holdout_tolerance,
           f"holdout ({n} real photos, champion re-scored): accuracy "
           f"{holdout['candidate_accuracy']:.4f} vs champion {champion} "
           f"{holdout['champion_accuracy']:.4f}, difference {difference:+.4f}, upper bound "
           f"{upper:+.4f} {{}} -{policy.holdout_tolerance:g}", passes, failures)


def _check(ok: bool, template: str, passes: list[str], failures: list[str]) -> None:
    """Record `template` (with {} -> >= or <) as a pass or a failure."""
    (passes if ok else failures).append(template.format(">=" if ok else "<"))


def _class_name(index: int, class_names: Sequence[str]) -> str:
    return f"class {index} ({class_names[index]})" if index < len(class_names) else f"class {index}"
