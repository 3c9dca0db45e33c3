"""The image and deploy/ keep their contract without a container engine: each file is
parsed (Dockerfile instructions, compose and Kubernetes YAML, the systemd unit) and
checked for the probes, the mounts, the user and the pinned build."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IMAGE_UID = 10001
HTTP_PORT = 9464


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in stage {self.name or self.base}"
        return found[-1]


def _dockerfile() -> list[Stage]:
    """The Dockerfile as stages of (INSTRUCTION, arguments): continuation lines joined,
    comments and the parser directive dropped."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0]))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def _env(stage: Stage) -> dict[str, str]:
    values: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            values[name] = value
    return values


def test_the_image_is_built_in_two_stages_from_pinned_wheels() -> None:
    stages = _dockerfile()
    assert len(stages) >= 2, "a multi-stage build: wheels in a builder, no toolchain at runtime"
    builder, runtime = stages[0], stages[-1]
    build = " ".join(builder.all("RUN"))
    assert re.search(r"pip wheel .*--constraint constraints\.txt", build), build
    assert any("constraints.txt" in copy for copy in builder.all("COPY"))
    install = " ".join(runtime.all("RUN"))
    assert "pip install" in install
    assert "--no-index" in install
    assert f"from={builder.name}" in install or any(
        f"--from={builder.name}" in c for c in runtime.all("COPY")
    ), "the runtime installs the builder's wheels"


def test_the_constraints_pin_every_runtime_dependency() -> None:
    """After a dependency is added to pyproject.toml, constraints.txt is regenerated (its
    header says how), or a rebuild would pick whatever version is newest that day."""
    pinned = {
        re.split(r"[=<>~!\[; ]", line, maxsplit=1)[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    assert all("==" in line for line in _requirement_lines()), "every constraint is exact"
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {
        re.split(r"[=<>~!\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")
        for spec in project["dependencies"]
    }
    assert wanted - pinned == set(), "regenerate constraints.txt (see its header)"


def _requirement_lines() -> list[str]:
    text = (REPO / "constraints.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_the_image_runs_as_a_fixed_non_root_user_with_its_state_in_data() -> None:
    runtime = _dockerfile()[-1]
    user = runtime.last("USER")
    uid = user.partition(":")[0]
    assert uid.isdigit(), "a numeric UID, so runAsNonRoot can check it"
    assert int(uid) == IMAGE_UID
    run = " ".join(runtime.all("RUN"))
    assert f"--uid {IMAGE_UID}" in run
    env = _env(runtime)
    assert env["MENTORPULSE_DATA_DIR"] == "/data"
    assert env["MENTORPULSE_CONFIG"].startswith("/config/")
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1", "nothing written beside the code"
    assert "/data" in json.loads(runtime.last("VOLUME"))
    assert "/config" not in json.loads(runtime.last("VOLUME"))
    assert json.loads(runtime.last("ENTRYPOINT")) == ["mentorpulse"]


def test_the_healthcheck_asks_healthz_on_the_service_port() -> None:
    runtime = _dockerfile()[-1]
    check = runtime.last("HEALTHCHECK")
    assert "CMD" in check
    assert f"127.0.0.1:{HTTP_PORT}/healthz" in check
    assert str(HTTP_PORT) in runtime.last("EXPOSE")


def _docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: anchored at the context's root, ``*``
    and ``?`` within one path segment, ``**`` across any number of them."""
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            regex += "(?:.*/)?"
            index += 3
        elif pattern.startswith("**", index):
            regex += ".*"
            index += 2
        elif pattern[index] == "*":
            regex += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            regex += "[^/]"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return re.compile(regex)


def _ignored(patterns: list[str], path: str) -> bool:
    """Whether Docker's build context leaves ``path`` out: a pattern that matches the
    path or one of its folders excludes it; the last matching rule wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = _docker_pattern(pattern.removeprefix("!").strip("/"))
        if any(compiled.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def test_dockerignore_keeps_the_build_context_to_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "x/__pycache__/a.pyc"):
        assert _ignored(patterns, path), path
    # What the Dockerfile copies must stay in the context.
    for path in ("pyproject.toml", "README.md", "LICENSE", "constraints.txt"):
        assert not _ignored(patterns, path), path
    assert not _ignored(patterns, "mentorpulse/cli/app.py")
    assert not _ignored(patterns, "deploy/config/mentorpulse.yaml")
    assert _ignored(patterns, "config/mentorpulse.yaml"), "the host example is not the image's"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_runs_two_workers_on_postgresql() -> None:
    services = _compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    workers = {name: s for name, s in services.items() if s.get("command") == ["run"]}
    assert len(workers) == 2
    for name, worker in workers.items():
        assert worker["environment"]["MENTORPULSE_DATABASE_URL"].startswith("postgresql://"), name
        assert "@postgres:5432/" in worker["environment"]["MENTORPULSE_DATABASE_URL"]
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        mounts = {v.split(":")[1]: v for v in worker["volumes"]}
        assert mounts["/config"].endswith(":ro"), "the config is mounted read-only"
        assert "/data" in mounts
        assert worker["read_only"] is True, "nothing but /data and /tmp is written"
        assert "/healthz" in " ".join(worker["healthcheck"]["test"])
        assert worker["user"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert "smtp" in services
    assert services["prometheus"]["volumes"][0].startswith("./prometheus.yml:")


def test_prometheus_scrapes_every_worker_on_the_service_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "mentorpulse"]
    assert job["metrics_path"] == "/metrics"
    targets = job["static_configs"][0]["targets"]
    workers = [n for n, s in _compose()["services"].items() if s.get("command") == ["run"]]
    assert sorted(targets) == sorted(f"{name}:{HTTP_PORT}" for name in workers)


def _container_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "config" / "mentorpulse.yaml").read_text(encoding="utf-8"))


def test_the_container_config_listens_beyond_loopback_on_the_probed_port() -> None:
    http = _container_config()["service"]["http"]
    assert http == {"enabled": True, "host": "0.0.0.0", "port": HTTP_PORT}
    # Every relative path it names is a read input or lands in the data folder.
    assert "data_dir" not in _container_config(), "the image sets MENTORPULSE_DATA_DIR"


def test_the_container_config_loads() -> None:
    from mentorpulse.config.loader import load_config

    config = load_config(DEPLOY / "config" / "mentorpulse.yaml")
    assert config.roster.path == "roster.csv"
    assert (DEPLOY / "config" / "roster.csv").is_file()


def _kubernetes() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return documents


def _one(kind: str) -> dict[str, Any]:
    [found] = [d for d in _kubernetes() if d["kind"] == kind]
    return found


def test_kubernetes_probes_health_and_readiness_on_the_service_port() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "mentorpulse"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == HTTP_PORT
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] in ("http", HTTP_PORT)
    assert container["args"] == ["run"]
    service = _one("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_kubernetes_mounts_the_config_map_the_secret_and_data() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    [container] = [c for c in pod["containers"] if c["name"] == "mentorpulse"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config = volumes[mounts["/config"]["name"]]
    assert config["configMap"]["name"] == "mentorpulse-config"
    assert mounts["/config"]["readOnly"] is True
    secret_name = _one("Secret")["metadata"]["name"]
    credentials = volumes[mounts["/run/secrets/mentorpulse"]["name"]]
    assert credentials["secret"]["secretName"] == secret_name
    data = volumes[mounts["/data"]["name"]]
    assert "emptyDir" in data or "persistentVolumeClaim" in data
    env = {e["name"]: e for e in container["env"]}
    assert env["MENTORPULSE_DATA_DIR"]["value"] == "/data"
    assert env["MENTORPULSE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == secret_name
    # The service account key the container config names is where the Secret lands.
    key = _container_config()["sources"][0]["service_account_key"]
    items = {i["key"]: i["path"] for i in credentials["secret"]["items"]}
    assert key == f"/run/secrets/mentorpulse/{items['google-sa.json']}"
    assert "google-sa.json" in _one("Secret")["stringData"]


def test_kubernetes_generates_the_config_map_from_the_container_config() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    [generated] = kustomization["configMapGenerator"]
    assert generated["name"] == "mentorpulse-config"
    assert sorted(generated["files"]) == ["config/mentorpulse.yaml", "config/roster.csv"]
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file(), resource
    assert {d["kind"] for d in _kubernetes()} == {"Deployment", "Secret", "Service"}


def test_kubernetes_runs_non_root_on_a_read_only_root() -> None:
    pod = _one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]


def _unit() -> dict[str, dict[str, list[str]]]:
    """The systemd unit as section -> key -> every value (keys repeat in units)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    text = (DEPLOY / "systemd" / "mentorpulse.service").read_text(encoding="utf-8")
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], {})
            continue
        assert current is not None, f"a key outside a section: {stripped}"
        key, sep, value = stripped.partition("=")
        assert sep, f"not key=value: {stripped}"
        current.setdefault(key, []).append(value)
    return sections


def test_the_systemd_unit_is_sandboxed_with_its_state_in_the_state_directory() -> None:
    service = _unit()["Service"]
    assert service["DynamicUser"] == ["yes"]
    assert service["StateDirectory"] == ["mentorpulse"]
    assert service["ConfigurationDirectory"] == ["mentorpulse"]
    assert service["ProtectSystem"] == ["strict"]
    for hardening in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert service[hardening] == ["yes"], hardening
    assert "AF_INET" in service["RestrictAddressFamilies"][0].split()
    environment = service["Environment"]
    assert "MENTORPULSE_DATA_DIR=%S/mentorpulse" in environment
    assert "MENTORPULSE_CONFIG=%E/mentorpulse/mentorpulse.yaml" in environment
    assert service["ExecStart"][0].endswith("mentorpulse run")
    assert _unit()["Install"]["WantedBy"] == ["multi-user.target"]
    # configparser reads it too (no duplicate section, every line key=value).
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((DEPLOY / "systemd" / "mentorpulse.service").read_text(encoding="utf-8"))
    assert parser["Service"]["DynamicUser"] == "yes"
