"""The conventions every `newspulse` command follows (docs/cli.md), checked on the whole command
tree: one exit-code scheme, `--json` on every read command printing one JSON document and nothing
else, human output without Python reprs, help that works whatever the environment and shows
metavars for people, read commands that create no files, and a Kafka timeout that bounds the
whole command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import typer
from peers import free_port
from typer.testing import CliRunner

from newspulse.cli import app
from newspulse.errors import ExitCode
from newspulse.schema import Alert, AlertStatus, DriverArticle
from newspulse.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

#: Every command that only reads, with arguments that make it succeed on the seeded store below.
READ_COMMANDS: list[list[str]] = [
    ["store", "stats"],
    ["alerts", "list"],
    ["alerts", "show", "a1"],
    ["alerts", "silence", "list"],
    ["alerts", "rules"],
    ["model", "list"],
]
#: Read commands that need a trained model or real input, so they are not run here.
HEAVY_READ_COMMANDS = [("model", "evaluate"), ("model", "evaluate-topics"), ("model", "evaluate-entities"), ("bench", "model"), ("summarize",)]


def _tree(group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    """Every command under ``group`` (a Typer group) with its path, groups included."""
    found = [(path, group)]
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):
            found += _tree(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = _tree(typer.main.get_command(app))


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    """A store with one firing alert, silences and a registry under ``tmp_path`` (the cwd)."""
    from newspulse.store.sqlite import SQLiteStore

    for name in [k for k in os.environ if k.startswith("NEWSPULSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"sqlite:///{tmp_path / 'np.db'}")
    monkeypatch.setenv("NEWSPULSE_ALERT_SILENCES", str(tmp_path / "silences.json"))
    monkeypatch.setenv("NEWSPULSE_MODEL_REGISTRY", str(tmp_path / "registry"))
    get_settings.cache_clear()
    store = SQLiteStore(tmp_path / "np.db")
    store.upsert_alerts([
        Alert(id="a1", rule="ticker-negative", scope="ticker:ACME", status=AlertStatus.firing, window_minutes=15, started_at=T0, updated_at=T0,
              fired_at=T0, magnitude=6.2, baseline=0.2, value=0.9, volume=10, message="ticker:ACME: 90% negative",
              drivers=[DriverArticle(id="d1", title="Acme recalls cars", score=-0.9, published_at=T0)]),
    ])  # fmt: skip
    store.close()
    yield tmp_path
    get_settings.cache_clear()


def invoke(*args: str, stdin: str | None = None):
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args), input=stdin)


def test_every_read_command_has_json():
    """A script can read every read command; `--json` is spelled the same everywhere."""
    by_path = dict(COMMANDS)
    paths = [tuple(word for word in command if word != "a1") for command in READ_COMMANDS] + HEAVY_READ_COMMANDS
    for path in paths:
        options = {opt for p in by_path[path].params for opt in p.opts}
        assert "--json" in options, path


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_json_is_one_document_on_stdout_and_human_output_has_no_reprs(seeded, command):
    done = invoke(*command, "--json")
    assert done.exit_code == 0, done.output
    json.loads(done.stdout)  # the whole of stdout is one document
    human = invoke(*command)
    assert human.exit_code == 0, human.output
    for repr_mark in ("None", "{'", "['", "': ", "datetime.", "<"):
        assert repr_mark not in human.stdout, (repr_mark, human.stdout)


def test_store_stats_prints_counts_not_python_reprs(seeded):
    """#28: `store stats` printed `{'negative': 0}` and `None`."""
    out = invoke("store", "stats").stdout
    assert "{" not in out and "None" not in out
    assert any(line.split()[0] == "alerts" and line.split()[1] == "1" for line in out.splitlines()), out


def test_bench_model_json_is_a_document_and_plain_output_is_for_people(seeded, monkeypatch):
    """#28: `bench model --json` meant only "no indentation"; now it is the one JSON document and
    the plain output is one line per figure."""
    result = {"model_version": "v1", "dev_macro_f1": 0.83, "throughput": {"production_int8": {"texts_per_s": 120.5}}, "note": None}
    monkeypatch.setattr("newspulse.models.sentiment.bench.run_model_bench", lambda settings: dict(result))
    as_json = invoke("bench", "model", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == result
    human = invoke("bench", "model")
    assert "throughput.production_int8.texts_per_s  120.5" in human.stdout and "{" not in human.stdout and "None" not in human.stdout


def test_alerts_show_and_ack_of_a_missing_alert_exit_4(seeded):
    """#28: both exited 1 although not-found is its own code."""
    for command in (["alerts", "show", "nope"], ["alerts", "ack", "nope"], ["alerts", "silence", "remove", "nope"]):
        done = invoke(*command)
        assert done.exit_code == ExitCode.not_found, (command, done.output)
        assert done.stderr.strip().count("\n") == 0 and "nope" in done.stderr


def test_model_train_lets_an_unexpected_value_error_through_as_a_failure(seeded, monkeypatch):
    """A ValueError that is not bad input (a bug deep in training) is no longer reported as a
    usage error with exit 2: only the typed errors map to exit codes."""
    import newspulse.models.sentiment.train as train

    def broken(cfg):
        raise ValueError("shapes do not match")

    monkeypatch.setattr(train, "train", broken)
    done = invoke("model", "train", "--steps", "1", stdin="")
    assert done.exit_code == ExitCode.failure and isinstance(done.exception, ValueError), (done.exit_code, done.output)


@pytest.mark.parametrize(
    ("args", "env", "code", "needle"),
    [
        (["store", "stats"], {}, ExitCode.ok, "articles"),
        (["store", "stats", "--no-such-option"], {}, ExitCode.usage, "No such option"),
        (["alerts", "silence", "add", "market", "--until", "yesterday"], {}, ExitCode.usage, "neither a duration"),
        (["replay", "--file", "missing.csv"], {}, ExitCode.usage, "missing.csv"),
        (["summarize"], {}, ExitCode.usage, "empty input"),
        (["store", "stats"], {"NEWSPULSE_DASHBOARD_PORT": "0"}, ExitCode.config, "NEWSPULSE_DASHBOARD_PORT"),
        (["alerts", "rules"], {"NEWSPULSE_ALERT_RULES": "missing-rules.yaml"}, ExitCode.config, "missing-rules.yaml"),
        (["dashboard"], {"NEWSPULSE_DASHBOARD_ADDRESS": "0.0.0.0"}, ExitCode.config, "NEWSPULSE_DASHBOARD_PASSWORD"),
        (["store", "stats"], {"NEWSPULSE_STORE_URL": "sqlite:///absent/np.db"}, ExitCode.not_found, "no store at absent/np.db"),
        (["model", "evaluate", "--model-version", "v0"], {}, ExitCode.not_found, "no model version 'v0'"),
        (["model", "promote", "v9"], {}, ExitCode.not_found, "v9"),
        (["model", "promote", "../v9", "--force"], {}, ExitCode.usage, "bad model version"),
        (["model", "train", "--batch-size", "0"], {}, ExitCode.usage, "batch_size must be ≥ 1"),
        (["model", "train", "--max-length", "4"], {}, ExitCode.usage, "greater than or equal to 8"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_exit_codes_follow_one_scheme(seeded, monkeypatch, args, env, code, needle):
    """0 ok, 1 failure, 2 usage or bad input, 3 configuration, 4 not found; an error is one line."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = invoke(*args, stdin="")
    assert done.exit_code == code, (done.exit_code, done.output)
    assert needle in done.output
    if code:
        assert "Traceback" not in done.output


def test_a_failure_exits_1(seeded, monkeypatch):
    """A peer that cannot be reached is a failure of the command, not of its input."""
    monkeypatch.setenv("NEWSPULSE_STORE_URL", f"http://127.0.0.1:{free_port()}")
    done = invoke("store", "stats")
    assert done.exit_code == ExitCode.failure and "unavailable" in done.stderr


def test_help_works_whatever_the_environment_and_reads_like_prose(seeded, monkeypatch):
    """#28: `newspulse model train --help` exited 2 with an invalid setting; Typer's metavars
    showed `<bool>`, `<list[Path]>` and `{version}`."""
    monkeypatch.setenv("NEWSPULSE_DASHBOARD_PORT", "0")
    Path(".env").write_text("NEWSPULSE_LOG_LEVEL=LOUD\n")
    for path, _ in COMMANDS:
        done = invoke(*path, "--help")
        assert done.exit_code == 0, (path, done.output)
        assert "<" not in done.output and "{" not in done.output, (path, done.output)
    assert "--model-version" in invoke("model", "evaluate", "--help").output


def test_model_train_help_in_a_broken_environment_as_a_process(tmp_path):
    """The case of #28 as a user runs it, .env in the current folder included."""
    (tmp_path / ".env").write_text("NEWSPULSE_DASHBOARD_PORT=0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")} | {"NEWSPULSE_KAFKA_PARTITIONS": "many"}
    done = subprocess.run([sys.executable, "-m", "newspulse.cli", "model", "train", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--epochs" in done.stdout, done.stderr
    run = subprocess.run([sys.executable, "-m", "newspulse.cli", "store", "stats"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == ExitCode.config and "NEWSPULSE_KAFKA_PARTITIONS" in run.stderr


def test_read_commands_create_no_files(tmp_path):
    """#28: `store stats` created var/newspulse.db and `summarize` wrote var/onnx-cache in the
    current folder. With the default settings, a missing store is one line (exit 4)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    cache = ROOT / ".cache" / "xdg"  # the encoder's ONNX export is built once per checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")} | {"XDG_CACHE_HOME": str(cache)}
    for command in READ_COMMANDS:
        done = subprocess.run([sys.executable, "-m", "newspulse.cli", *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode in (ExitCode.ok, ExitCode.not_found), (command, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.count("\n") <= 1, (command, done.stderr)
    stats = subprocess.run([sys.executable, "-m", "newspulse.cli", "store", "stats"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert stats.returncode == ExitCode.not_found and "no store at var/newspulse.db" in stats.stderr
    story = "Acme Corp said its quarterly profit rose 20 percent. The company raised its outlook. Shares rose."
    summary = subprocess.run([sys.executable, "-m", "newspulse.cli", "summarize", "--json"], cwd=cwd, env=env, input=story, capture_output=True, text=True, timeout=600)
    assert summary.returncode == 0, summary.stderr[-2000:]
    assert json.loads(summary.stdout)["summary"].startswith("Acme Corp")
    assert list(cwd.iterdir()) == []


def test_init_topics_timeout_bounds_the_whole_command(tmp_path):
    """#28: `kafka init-topics --timeout 1` without a broker ran 30 s and ended in a
    KafkaTimeoutError traceback under a flood of kafka-python log lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSPULSE_")} | {"NEWSPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    argv = [sys.executable, "-m", "newspulse.cli", "kafka", "init-topics", "--timeout", "1"]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == ExitCode.failure, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "answered within 1 s" in done.stderr, done.stderr
    assert done.stdout == ""
    assert elapsed < 15, elapsed  # 1 s plus the interpreter's start on a loaded 2-core machine
    verbose = subprocess.run([*argv[:3], "-v", *argv[3:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert verbose.returncode == ExitCode.failure and "kafka." in verbose.stderr, "-v shows the library's log lines"
