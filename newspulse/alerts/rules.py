"""Alert rules and receivers, read from YAML (``NEWSPULSE_ALERT_RULES`` or the built-in file).

A rule says which scopes to watch (market, each ticker, topic or source, optionally filtered by
glob patterns), over which event-time windows, how far above its own baseline a window must be
to count as a spike, for how many consecutive windows (persistence), and who hears about it.
Everything is validated at start-up: a typo in the rules file stops the alerter with a message
that names the rule and the field, instead of silently never alerting.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from newspulse.errors import ConfigError

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.yaml")

ScopeKind = Literal["market", "ticker", "topic", "source"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RulesError(ConfigError, ValueError):
    """The rules file is missing, not YAML, or names an invalid field or receiver."""


class Severity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_z: float
    severity: str


class Baseline(BaseModel):
    """How a scope's normal level is estimated from its own past windows."""

    model_config = ConfigDict(extra="forbid")

    lookback_windows: Annotated[int, Field(ge=4, le=20_000)] = 96
    min_history: Annotated[int, Field(ge=2)] = 8
    prior_weight: Annotated[float, Field(ge=0)] = 20.0
    seasonality: bool = True
    seasonal_weeks: Annotated[int, Field(ge=2, le=12)] = 4
    seasonal_min_weeks: Annotated[int, Field(ge=2, le=12)] = 3


class Rule(BaseModel):
    """One detector + lifecycle configuration. Durations are in minutes of event time."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    scope: ScopeKind
    include: list[str] = Field(default_factory=list, description="Glob patterns of scope values to watch; empty = all.")
    exclude: list[str] = Field(default_factory=list)
    windows: list[Annotated[int, Field(ge=1, le=1440)]] = Field(default_factory=lambda: [15, 60])
    hop_minutes: Annotated[int, Field(ge=1, le=1440)] = Field(3, description="Windows slide by this step; each window length must be a multiple of it.")
    direction: Literal["negative", "positive"] = "negative"
    min_volume: Annotated[int, Field(ge=1)] = 5
    min_count: Annotated[int, Field(ge=1)] = 3
    z_threshold: Annotated[float, Field(gt=0)] = 4.0
    min_share_z: Annotated[float, Field(ge=0)] = 2.0
    min_share_delta: Annotated[float, Field(ge=0, le=1)] = 0.2
    volume_ratio: Annotated[float, Field(ge=0)] = 1.5
    exclude_top: Annotated[int, Field(ge=0, le=10)] = Field(
        0, description="A spike must remain one with this many top companies' stories left out: keeps one company's bad day from raising a market, topic or source alert."
    )
    persistence: Annotated[int, Field(ge=1, le=100)] = 1
    resolve_after: Annotated[int, Field(ge=1, le=100)] = 2
    cooldown_minutes: Annotated[int, Field(ge=0)] = 60
    repeat_interval_minutes: Annotated[int, Field(ge=0)] = 240
    flap_threshold: Annotated[int, Field(ge=1)] = 3
    max_drivers: Annotated[int, Field(ge=1, le=50)] = 5
    baseline: Baseline = Field(default_factory=Baseline)
    severities: list[Severity] = Field(
        default_factory=lambda: [Severity(min_z=4.0, severity="warning"), Severity(min_z=8.0, severity="critical")]
    )
    receivers: list[str] = Field(default_factory=lambda: ["log"])

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one window")
        return sorted(set(v))

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[Severity]) -> list[Severity]:
        return sorted(v, key=lambda s: s.min_z)

    @model_validator(mode="after")
    def _hop(self) -> "Rule":
        bad = [w for w in self.windows if w % self.hop_minutes]
        if bad:
            raise ValueError(f"windows {bad} are not multiples of hop_minutes={self.hop_minutes}")
        return self

    def watches(self, value: str) -> bool:
        """Whether a scope value (a ticker, topic or source) passes the include/exclude filters."""
        if self.include and not any(fnmatch.fnmatchcase(value, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(value, p) for p in self.exclude)

    def severity_for(self, z: float) -> str:
        chosen = self.severities[0].severity if self.severities else "warning"
        for s in self.severities:
            if z >= s.min_z:
                chosen = s.severity
        return chosen


class ReceiverConfig(BaseModel):
    """Where notifications go. ``${VAR}`` in any string is replaced from the environment."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["log", "webhook", "email"]
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    smtp_host: str | None = None
    smtp_port: int = 587
    starttls: bool = True
    username: str | None = None
    password_env: str | None = Field(None, description="Name of the variable holding the SMTP password.")
    sender: str | None = None
    to: list[str] = Field(default_factory=list)
    min_backoff_seconds: Annotated[float, Field(gt=0)] = 1.0
    max_backoff_seconds: Annotated[float, Field(gt=0)] = 300.0

    @field_validator("headers")
    @classmethod
    def _header_values(cls, v: dict[str, str]) -> dict[str, str]:
        """Strip header values, and refuse one that still holds a control character.

        Secret files often end with a newline, and ``${TOKEN}`` pastes it into the value; sent
        as is, the HTTP client refuses the header and quotes it, secret included, in an error
        that would be retried and logged forever. The message names the header, never its value.
        """
        cleaned: dict[str, str] = {}
        for name, value in v.items():
            value = value.strip()
            bad = next((c for c in name + value if ord(c) < 0x20 or ord(c) == 0x7F), None)
            if bad is not None:
                raise ValueError(f"header {name!r} contains control character U+{ord(bad):04X} (value not shown)")
            cleaned[name] = value
        return cleaned

    @property
    def secrets(self) -> list[str]:
        """Values an error must never show: every header value and the SMTP password."""
        password = os.environ.get(self.password_env, "") if self.password_env else ""
        return [*self.headers.values(), *([password] if password else [])]

    @property
    def enabled(self) -> bool:
        """A webhook without a URL or an email without host/recipients is configured but off."""
        if self.type == "webhook":
            return bool(self.url)
        if self.type == "email":
            return bool(self.smtp_host and self.to and self.sender)
        return True


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_lateness_minutes: Annotated[float, Field(ge=0, le=1440)] = 5.0
    receivers: dict[str, ReceiverConfig] = Field(default_factory=lambda: {"log": ReceiverConfig(type="log")})
    rules: list[Rule]

    @model_validator(mode="after")
    def _check(self) -> "RuleSet":
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {dupes}")
        for rule in self.rules:
            unknown = [r for r in rule.receivers if r not in self.receivers]
            if unknown:
                raise ValueError(f"rule {rule.name!r} names unknown receivers {unknown}; known: {sorted(self.receivers)}")
        return self


def _expand_env(value: object) -> object:
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), ""), value)
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    return value


def parse_rules(text: str, origin: str = "<rules>") -> RuleSet:
    """Validate rules given as YAML text."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RulesError(f"{origin}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise RulesError(f"{origin}: expected a mapping with a 'rules' list")
    try:
        return RuleSet.model_validate(_expand_env(raw))
    except ValidationError as err:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise RulesError(f"{origin}: {details}") from None


def load_rules(path: Path | None = None) -> RuleSet:
    """Rules from ``path``, or the built-in defaults when ``path`` is None."""
    path = path or DEFAULT_RULES_FILE
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise RulesError(f"cannot read alert rules {path}: {err.strerror}") from None
    return parse_rules(text, str(path))
