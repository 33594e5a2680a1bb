"""Alert lifecycle per (rule, scope) group: pending → firing → resolved, like Alertmanager's.

All times here are event time (window ends), so a replay walks through the same transitions as
the live stream. Per group:

* a spike window opens a *pending* alert; it *fires* once ``persistence`` consecutive windows of
  one length were spikes (persistence 1 fires at once). A pending alert whose windows all turn
  normal is closed as resolved without ever notifying anyone;
* a firing alert stays open while windows are spikes or merely *elevated* (hysteresis), and
  resolves after ``resolve_after`` consecutive normal windows (and the last window of every other
  length normal too);
* *cooldown*: a spike within ``cooldown_minutes`` after resolution re-opens the same alert instead
  of raising a new one, and the "resolved" notice is only sent once the cooldown has passed
  quietly, so a story that bounces around the threshold gives one firing and one resolved message;
* *flapping*: an alert re-opened ``flap_threshold`` times is marked flapping and sends no repeats;
* *repeat interval*: a firing alert that is not acknowledged is re-notified every
  ``repeat_interval_minutes`` (0 = never).

The machine returns notification events ("firing", "repeat-N", "resolved"); delivery is the
caller's business.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from newspulse.alerts.detector import Verdict
from newspulse.alerts.rules import Rule
from newspulse.schema import Alert, AlertStatus, DriverArticle

GroupState = Literal["pending", "firing", "cooling"]


def alert_id(rule: str, scope: str, started_at: datetime) -> str:
    """Deterministic, so a replay upserts the alerts it raised before instead of duplicating them."""
    return hashlib.sha256(f"{rule}\x1f{scope}\x1f{started_at.isoformat()}".encode()).hexdigest()[:20]


@dataclass
class Group:
    rule: Rule
    scope: str
    state: GroupState
    alert: Alert
    streak: dict[int, int] = field(default_factory=dict)
    quiet: dict[int, int] = field(default_factory=dict)
    last_level: dict[int, str] = field(default_factory=dict)
    last_notified: datetime | None = None
    repeats: int = 0
    reopened: int = 0


@dataclass
class Transition:
    """An alert that changed, and the notification events it owes its receivers."""

    alert: Alert
    events: list[str] = field(default_factory=list)


def _merge_drivers(old: list[DriverArticle], new: list[DriverArticle], limit: int, negative: bool) -> list[DriverArticle]:
    seen: dict[str, DriverArticle] = {d.id: d for d in old}
    for d in new:
        seen.setdefault(d.id, d)
    ordered = sorted(seen.values(), key=lambda d: (d.score if negative else -d.score, d.id))
    return ordered[:limit]


def describe(alert: Alert, share: float, count: int, hits: int, direction: str) -> str:
    return (
        f"{alert.scope}: {share:.0%} {direction} ({hits}/{count} articles) in the {alert.window_minutes}-min window "
        f"from {alert.updated_at - timedelta(minutes=alert.window_minutes):%Y-%m-%d %H:%M}Z vs baseline "
        f"{alert.baseline:.0%}, z={alert.magnitude:.1f}"
    )


class Lifecycle:
    """Group states for all rules; feed it verdicts in event-time order."""

    def __init__(self, rules: Iterable[Rule], acknowledged: Callable[[Alert], bool] = lambda a: a.acknowledged) -> None:
        """``acknowledged`` says whether an analyst acked an alert (they do it in the store, from
        another process); it is asked only when a repeat notification is due."""
        self.rules = {r.name: r for r in rules}
        self.acknowledged = acknowledged
        self.groups: dict[tuple[str, str], Group] = {}

    def active_scopes(self, rule: str) -> list[str]:
        """Scopes of a rule whose alert is pending or firing (they need a verdict every window)."""
        return [g.scope for (r, _), g in self.groups.items() if r == rule and g.state != "cooling"]

    def restore(self, alert: Alert) -> None:
        """Adopt an open alert from the store after a restart."""
        rule = self.rules.get(alert.rule)
        if rule is None or alert.status == AlertStatus.resolved:
            return
        state: GroupState = "firing" if alert.status == AlertStatus.firing else "pending"
        g = Group(rule=rule, scope=alert.scope, state=state, alert=alert, last_notified=alert.updated_at)
        g.streak = {w: (rule.persistence if state == "firing" else 1) for w in rule.windows}
        self.groups[(rule.name, alert.scope)] = g

    def expire(self, rule_name: str, now: datetime) -> list[Transition]:
        """Finish cooldowns that passed quietly: the resolved notice is due."""
        out = []
        rule = self.rules[rule_name]
        for key, g in list(self.groups.items()):
            if key[0] == rule_name and g.state == "cooling" and g.alert.resolved_at is not None:
                if now >= g.alert.resolved_at + timedelta(minutes=rule.cooldown_minutes):
                    del self.groups[key]
                    out.append(Transition(g.alert, ["resolved"]))
        return out

    def apply(self, v: Verdict) -> list[Transition]:
        rule = self.rules[v.rule]
        key = (v.rule, v.scope)
        g = self.groups.get(key)
        if g is None:
            if v.level != "spike":
                return []
            g = self._open(rule, v)
            self.groups[key] = g
        w = v.window_minutes
        g.last_level[w] = v.level
        g.streak[w] = g.streak.get(w, 0) + 1 if v.level == "spike" else 0
        g.quiet[w] = g.quiet.get(w, 0) + 1 if v.level == "normal" else 0
        changed = Transition(g.alert)
        if v.level != "normal":
            self._update(g, v)
        if g.state == "cooling":
            if v.level == "spike":
                self._reopen(g, v, changed)
            else:
                return []
        elif g.state == "pending":
            if v.level == "spike" and g.streak[w] >= rule.persistence:
                self._fire(g, v, changed)
            elif not any(g.streak.values()):
                g.alert.status = AlertStatus.resolved
                g.alert.resolved_at = v.end
                g.alert.message = f"cleared before firing (needed {rule.persistence} consecutive spike windows)"
                del self.groups[key]
        elif g.state == "firing":
            others_calm = all(lvl == "normal" for ww, lvl in g.last_level.items() if ww != w)
            if g.quiet[w] >= rule.resolve_after and others_calm:
                self._resolve(g, v, changed)
            elif self._repeat_due(g, v.end):
                g.repeats += 1
                g.last_notified = v.end
                changed.events.append(f"repeat-{g.repeats}")
        g.alert.updated_at = v.end
        return [changed]

    # --- transitions -------------------------------------------------------------------
    def _open(self, rule: Rule, v: Verdict) -> Group:
        alert = Alert(
            id=alert_id(rule.name, v.scope, v.start),
            rule=rule.name,
            scope=v.scope,
            status=AlertStatus.pending,
            severity=rule.severity_for(v.z),
            window_minutes=v.window_minutes,
            started_at=v.start,
            updated_at=v.end,
            magnitude=v.z,
            baseline=v.baseline_share,
            value=v.share,
            volume=v.count,
        )
        return Group(rule=rule, scope=v.scope, state="pending", alert=alert)

    def _update(self, g: Group, v: Verdict) -> None:
        """Keep the peak window's figures, and the strongest driving stories seen so far."""
        a = g.alert
        a.drivers = _merge_drivers(a.drivers, v.drivers, g.rule.max_drivers, g.rule.direction == "negative")
        if v.level == "spike" and v.z >= a.magnitude:
            a.magnitude, a.baseline, a.value, a.volume = v.z, v.baseline_share, v.share, v.count
            a.window_minutes = v.window_minutes
            a.severity = g.rule.severity_for(v.z)
            a.message = describe(a, v.share, v.count, v.hits, g.rule.direction)

    def _fire(self, g: Group, v: Verdict, changed: Transition) -> None:
        g.state = "firing"
        g.alert.status = AlertStatus.firing
        g.alert.fired_at = v.end
        g.last_notified = v.end
        changed.events.append("firing")

    def _reopen(self, g: Group, v: Verdict, changed: Transition) -> None:
        g.state = "firing"
        g.reopened += 1
        g.alert.status = AlertStatus.firing
        g.alert.resolved_at = None
        g.alert.flapping = g.reopened >= g.rule.flap_threshold
        g.alert.message = describe(g.alert, v.share, v.count, v.hits, g.rule.direction) + f" (re-opened {g.reopened}x within cooldown)"

    def _resolve(self, g: Group, v: Verdict, changed: Transition) -> None:
        g.state = "cooling"
        g.alert.status = AlertStatus.resolved
        g.alert.resolved_at = v.end
        if g.rule.cooldown_minutes == 0:
            del self.groups[(g.rule.name, g.scope)]
            changed.events.append("resolved")

    def _repeat_due(self, g: Group, now: datetime) -> bool:
        rule = g.rule
        if not rule.repeat_interval_minutes or g.alert.flapping or g.last_notified is None:
            return False
        if now - g.last_notified < timedelta(minutes=rule.repeat_interval_minutes):
            return False
        g.alert.acknowledged = g.alert.acknowledged or self.acknowledged(g.alert)
        return not g.alert.acknowledged
