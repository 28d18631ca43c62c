"""The deployment files — deploy/compose, deploy/k8s, deploy/systemd — checked without Docker,
a cluster or the network.

Against their tools: every compose file follows the Compose Specification (the schema
check-jsonschema vendors), every manifest the Kubernetes API schemas (those
kubernetes-validate bundles), strictly, so a misspelled field fails.

Against this project: every `flowlogs …` command line parses with `flowlogs.cli`'s parser,
every `python -m X` names a module, every FLOWLOGS_* variable named anywhere is a settings
field, each container's settings (its variables over its settings file) load, the files those
settings and commands name are mounted and valid, and each probe or scrape path is a route
of the worker. The last tests feed each check a broken copy and see it complain.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel

from flowlogs.cli import build_parser
from flowlogs.errors import ConfigError
from flowlogs.settings import Settings, load_settings
from pipeline.reports import REPORTS
from schemas.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose"
K8S = ROOT / "deploy" / "k8s"
SYSTEMD = ROOT / "deploy" / "systemd"
DEPLOY_DIRS = (COMPOSE, K8S, SYSTEMD)
COMPOSE_FILES = (COMPOSE / "compose.yaml", COMPOSE / "compose.sasl.yaml")
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest Kubernetes the manifests are meant for, and the newest the validator knows.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
WORKER_PORT = 6066
# What `.env` holds in a test run (README.md tells how to make the real one).
COMPOSE_VARIABLES = {"API_TOKEN": "0123456789abcdef0123456789abcdef", "CLICKHOUSE_PASSWORD": "pw0123", "SASL_PASSWORD": "pw4567"}
AGENT_SOURCES = ("synthetic", "pcap", "interface", "vxlan", "gre")


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{p.name}#{i}", doc) for p in MANIFESTS for i, doc in enumerate(yaml.safe_load_all(p.read_text())) if doc]


def dockerfile_exec_form(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction}\s+(\[.*\])\s*$", (COMPOSE / "Dockerfile").read_text(), re.MULTILINE)
    assert match, f"Dockerfile has no exec-form {instruction}"
    return list(json.loads(match.group(1)))


IMAGE_ENTRYPOINT, IMAGE_CMD = dockerfile_exec_form("ENTRYPOINT"), dockerfile_exec_form("CMD")


# ---------------------------------------------------------------------------------------------
# Command lines


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line: split at ; && || |, redirections dropped."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    redirected = False
    for token in lexer:
        if set(token) <= set(";&|()"):
            commands.append([])
            redirected = False
        elif set(token) <= set("<>"):
            if commands[-1] and commands[-1][-1].isdigit():  # 2> …
                commands[-1].pop()
            redirected = True
        elif not redirected:
            commands[-1].append(token)
    return [c for c in commands if c]


def expand(argv: list[str]) -> list[list[str]]:
    """The commands an argv runs: itself, or the simple commands of ``sh -c SCRIPT``."""
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        return shell_commands(argv[2])
    return [argv]


def flowlogs_argv(command: list[str]) -> list[str] | None:
    """The `flowlogs` invocation in a command (after exec, VAR=…, `docker compose exec SVC`)."""
    while command and (command[0] == "exec" or re.fullmatch(r"\w+=.*", command[0])):
        command = command[1:]
    for i, token in enumerate(command):
        if Path(token).name == "flowlogs" and (i == 0 or (i >= 2 and command[i - 2] == "exec")):
            return ["flowlogs", *command[i + 1 :]]
        if Path(token).name.startswith("python") and command[i + 1 : i + 2] == ["-m"] and command[i + 2 : i + 3] == ["flowlogs.cli"]:
            return ["flowlogs", *command[i + 3 :]]
    return None


def module_problems(command: list[str]) -> list[str]:
    """`python -m X`: X must be importable (a package needs a __main__)."""
    problems = []
    for i, token in enumerate(command[:-2]):
        if Path(token).name.startswith("python") and command[i + 1] == "-m":
            module = command[i + 2]
            try:
                spec = importlib.util.find_spec(module)
                if spec is not None and spec.submodule_search_locations is not None:
                    spec = importlib.util.find_spec(f"{module}.__main__")
            except ModuleNotFoundError:
                spec = None
            if spec is None:
                problems.append(f"python -m {module}: no such module")
    return problems


def flowlogs_problems(argv: list[str]) -> list[str]:
    """What `flowlogs` would refuse in this command line, before doing anything."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        said = errors.getvalue().strip().splitlines() or ["refused"]
        return [] if exc.code == 0 else [f"{shlex.join(argv)}: {said[-1]}"]
    problems = []
    if args.command == "agent":  # the checks cmd_agent makes before it starts
        sources = [name for name in AGENT_SOURCES if getattr(args, name) not in (None, False)]
        if len(sources) != 1:
            problems.append(f"{shlex.join(argv)}: needs exactly one source of {', '.join(AGENT_SOURCES)}")
        elif sources != ["synthetic"] and args.inventory is None:
            problems.append(f"{shlex.join(argv)}: --{sources[0]} needs --inventory")
    if args.command == "report" and args.name is not None:
        spec = REPORTS.get(args.name)
        if spec is None:
            problems.append(f"{shlex.join(argv)}: no report {args.name!r}")
        else:
            known = {f"--{p.name}" for p in spec.params} | {"--format"}
            unknown = [flag for flag in args.params if flag.startswith("--") and flag.split("=")[0] not in known]
            problems += [f"{shlex.join(argv)}: report {spec.name} has no {flag}" for flag in unknown]
    return problems


def command_problems(argv: list[str]) -> list[str]:
    problems = []
    for command in expand(argv):
        problems += module_problems(command)
        found = flowlogs_argv(command)
        if found is not None:
            problems += flowlogs_problems(found)
    return problems


# ---------------------------------------------------------------------------------------------
# Settings


def settings_field_problem(name: str) -> str | None:
    """FLOWLOGS_<SECTION>__<FIELD> (or a top-level FLOWLOGS_<FIELD>) must name a settings field."""
    if name == "FLOWLOGS_CONFIG":  # the settings file itself
        return None
    model: type[BaseModel] = Settings
    parts = name.removeprefix("FLOWLOGS_").lower().split("__")
    for depth, part in enumerate(parts):
        if part not in model.model_fields:
            where = ".".join(parts[:depth]) or "the settings"
            return f"{name}: {where} has no field {part!r} (fields: {', '.join(model.model_fields)})"
        annotation = model.model_fields[part].annotation
        nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if depth == len(parts) - 1:
            return f"{name}: {'.'.join(parts)} is a whole section, not a field" if nested else None
        if not nested:
            return f"{name}: {'.'.join(parts[: depth + 1])} is a field, it has no {parts[depth + 1]!r}"
        model = annotation
    return None


@dataclass
class Container:
    """A flowlogs process as a deployment file starts it: command, environment, the files it sees."""

    source: str
    argv: list[str]
    env: dict[str, str]
    # mount point → a host file or directory, or a ConfigMap's data
    mounts: dict[PurePosixPath, Path | dict[str, str]] = field(default_factory=dict)
    sees_host_files: bool = False  # systemd: paths are the host's, not checkable here

    def read(self, path: str | Path) -> str | None:
        target = PurePosixPath(path)
        for point, content in self.mounts.items():
            if isinstance(content, dict):
                if target.parent == point and target.name in content:
                    return content[target.name]
            elif target == point and content.is_file():
                return content.read_text()
            elif content.is_dir() and target.is_relative_to(point) and (content / target.relative_to(point)).is_file():
                return (content / target.relative_to(point)).read_text()
        return None


def load_container_settings(container: Container, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Settings | None, list[str]]:
    """The container's settings as `flowlogs` would load them: its FLOWLOGS_* variables over the
    file FLOWLOGS_CONFIG names (read through its mounts), in a clean environment."""
    problems = [p for p in (settings_field_problem(n) for n in container.env if n.startswith("FLOWLOGS_")) if p]
    monkeypatch.chdir(tmp_path)  # no stray ./flowlogs.yaml
    for name in [n for n in os.environ if n.startswith("FLOWLOGS_")]:
        monkeypatch.delenv(name)
    for name, value in container.env.items():
        if name.startswith("FLOWLOGS_"):
            monkeypatch.setenv(name, value)
    config = container.env.get("FLOWLOGS_CONFIG")
    if config is not None and not container.sees_host_files:
        text = container.read(config)
        if text is None:
            return None, [*problems, f"FLOWLOGS_CONFIG={config}: not mounted"]
        local = tmp_path / f"config-{len(list(tmp_path.iterdir()))}{PurePosixPath(config).suffix}"
        local.write_text(text)
        monkeypatch.setenv("FLOWLOGS_CONFIG", str(local))
    elif config is not None:
        monkeypatch.delenv("FLOWLOGS_CONFIG")
    try:
        return load_settings(), problems
    except ConfigError as exc:
        return None, [*problems, str(exc)]


def mounted_file_problems(container: Container, settings: Settings, tmp_path: Path) -> list[str]:
    """The inventory the worker setting and an --inventory flag name: mounted, and valid."""
    paths = {str(settings.worker.inventory)} if settings.worker.inventory else set()
    argv = container.argv
    paths |= {argv[i + 1] for i, token in enumerate(argv[:-1]) if token == "--inventory"}
    paths |= {m.group(1) for m in re.finditer(r"--inventory[ =](\S+)", " ".join(argv))}
    problems = []
    for path in sorted(paths):
        text = container.read(path)
        if text is None:
            problems.append(f"{path}: named, but not mounted")
            continue
        local = tmp_path / "inventory.yaml"
        local.write_text(text)
        try:
            load_inventory(local)
        except ConfigError as exc:
            problems.append(f"{path}: {exc}")
    return problems


# ---------------------------------------------------------------------------------------------
# The containers of each deployment


_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        if name in variables:
            return variables[name]
        if match.group("op") and match.group("op").endswith("-"):
            return match.group("arg")
        raise KeyError(f"${{{name}}} is not set")

    return _INTERPOLATION.sub(value, text)


def compose_project(*files: Path) -> dict[str, Any]:
    """compose files merged as `docker compose -f … -f …` merges what these tests read."""
    project: dict[str, Any] = {}
    for path in files:
        for name, service in (read_yaml(path).get("services") or {}).items():
            merged = project.setdefault(name, {})
            for key, value in service.items():
                if key == "environment" and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = copy.deepcopy(value)
    return project


def is_flowlogs_service(service: dict[str, Any]) -> bool:
    build = service.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if not isinstance(build, dict):
        return False
    return (COMPOSE / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() == COMPOSE / "Dockerfile"


def compose_containers(*files: Path) -> list[Container]:
    label = " + ".join(p.name for p in files)
    containers = []
    for name, service in compose_project(*files).items():
        if not is_flowlogs_service(service):
            continue
        entrypoint, command = service.get("entrypoint"), service.get("command")
        entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else entrypoint
        command = shlex.split(command) if isinstance(command, str) else command
        # Compose: a new entrypoint drops the image's CMD.
        argv = (entrypoint or IMAGE_ENTRYPOINT) + (command if command is not None else ([] if entrypoint else IMAGE_CMD))
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        env = {k: interpolate(str(v), COMPOSE_VARIABLES) for k, v in environment.items()}
        mounts: dict[PurePosixPath, Path | dict[str, str]] = {}
        for volume in service.get("volumes") or []:
            source, target = interpolate(volume, COMPOSE_VARIABLES).split(":")[:2]
            if source.startswith("."):
                mounts[PurePosixPath(target)] = (COMPOSE / source).resolve()
        containers.append(Container(f"{label}: {name}", argv, env, mounts))
    return containers


def k8s_containers() -> list[Container]:
    docs = [doc for _, doc in manifests()]
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in docs if d["kind"] == "Secret"}
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    containers = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: config_maps.get(v["configMap"]["name"], {}) for v in pod.get("volumes", []) if "configMap" in v}
        for c in pod["containers"]:
            if not c["image"].split(":")[0].endswith("flowlogs"):
                continue
            # Kubernetes: command replaces ENTRYPOINT, args replaces CMD.
            argv = (c.get("command") or IMAGE_ENTRYPOINT) + (c.get("args") or ([] if c.get("command") else IMAGE_CMD))
            env = {}
            for item in c.get("env", []):
                ref = item.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    env[item["name"]] = secrets.get(ref["secretKeyRef"]["name"], {}).get(ref["secretKeyRef"]["key"], "")
                elif "configMapKeyRef" in ref:
                    env[item["name"]] = config_maps.get(ref["configMapKeyRef"]["name"], {}).get(ref["configMapKeyRef"]["key"], "")
                elif "fieldRef" in ref:
                    env[item["name"]] = "10.0.0.1"
                else:
                    env[item["name"]] = str(item.get("value", ""))
            mounts: dict[PurePosixPath, Path | dict[str, str]] = {
                PurePosixPath(m["mountPath"]): volumes[m["name"]] for m in c.get("volumeMounts", []) if m["name"] in volumes
            }
            containers.append(Container(f"{doc['kind']} {doc['metadata']['name']}: {c['name']}", argv, env, mounts))
    return containers


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit: section → [(key, value)], repeated keys kept."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
        else:
            key, _, value = line.partition("=")
            sections.setdefault(current, []).append((key.strip(), value.strip()))
    return sections


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if re.match(r"^\w+=", line))
    return {k: v for k, v in pairs}


def systemd_containers() -> list[Container]:
    containers = []
    for unit in sorted(SYSTEMD.glob("*.service")):
        service = unit_entries(unit)["Service"]
        env: dict[str, str] = {}
        for key, value in service:
            if key == "EnvironmentFile":  # /etc/flowlogs/agent.env ↔ agent.env.example beside the unit
                example = SYSTEMD / (PurePosixPath(value.lstrip("-")).name + ".example")
                assert example.is_file(), f"{unit.name}: EnvironmentFile={value} has no {example.name} beside it"
                env.update(env_file(example))
            elif key == "Environment":
                env.update(pair.split("=", 1) for pair in shlex.split(value.replace("%S", "/var/lib").replace("%C", "/var/cache")))
        for key, value in service:
            if key.startswith("Exec"):
                # systemd puts ${VAR} of the environment into the command line.
                command = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m, env=env: env.get(m.group(1) or m.group(2), m.group(0)), value)
                argv = shlex.split(command.lstrip("-@:+!"))
                containers.append(Container(f"{unit.name}: {key}", argv, env, sees_host_files=True))
    return containers


CONTAINERS = [
    *compose_containers(COMPOSE_FILES[0]),
    *compose_containers(*COMPOSE_FILES),
    *k8s_containers(),
    *systemd_containers(),
]


# ---------------------------------------------------------------------------------------------
# Against the tools' schemas


def compose_schema_problems(path: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    return "" if run.returncode == 0 else run.stdout + run.stderr


def k8s_schema_problem(doc: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return f"Kubernetes {version}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}: {where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return exc.message
    return None


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    assert compose_schema_problems(path) == ""


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_follow_the_kubernetes_schemas(version: str) -> None:
    problems = [p for _, doc in manifests() if (p := k8s_schema_problem(doc, version))]
    assert not problems, "\n".join(problems)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = read_yaml(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    assert {doc["metadata"].get("namespace", kustomization["namespace"]) for _, doc in manifests() if doc["kind"] != "Namespace"} == {
        kustomization["namespace"]
    }


# ---------------------------------------------------------------------------------------------
# Against this project


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c.source)
def test_commands_exist(container: Container) -> None:
    assert any(flowlogs_argv(c) for c in expand(container.argv)), f"{container.source} runs no flowlogs command: {container.argv}"
    assert command_problems(container.argv) == []


def test_health_checks_and_readme_commands_exist() -> None:
    commands: list[list[str]] = []
    for path in COMPOSE_FILES:
        for service in compose_project(path).values():
            test = (service.get("healthcheck") or {}).get("test") or []
            if test[:1] == ["CMD-SHELL"]:
                commands += shell_commands(test[1])
            elif test[:1] == ["CMD"]:
                commands.append(test[1:])
    for readme in (d / "README.md" for d in DEPLOY_DIRS):
        if readme.exists():
            blocks = re.findall(r"^```[^\n]*\n(.*?)^```", readme.read_text(), re.MULTILINE | re.DOTALL)
            commands += [c for block in blocks for line in block.splitlines() for c in shell_commands(line.split(" #")[0])]
    assert any(flowlogs_argv(c) for c in commands)
    assert [p for c in commands for p in command_problems(c)] == []


@pytest.mark.parametrize("container", CONTAINERS, ids=lambda c: c.source)
def test_settings_load_and_name_mounted_files(container: Container, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings, problems = load_container_settings(container, monkeypatch, tmp_path)
    assert problems == []
    assert settings is not None
    if not container.sees_host_files:
        assert mounted_file_problems(container, settings, tmp_path) == []
    if container.argv[1:2] == ["worker"]:
        assert settings.kafka.bootstrap_servers, "a worker here needs an existing cluster"
        assert settings.store.url, "workers that share a store need a ClickHouse server"
        assert settings.worker.api_host == "0.0.0.0", "the API must be reachable from outside the container"
        assert settings.worker.api_port == WORKER_PORT


def test_every_flowlogs_variable_named_is_a_setting() -> None:
    names = {
        (path.relative_to(ROOT), name)
        for directory in DEPLOY_DIRS
        for path in sorted(directory.rglob("*"))
        if path.is_file()
        for name in re.findall(r"\bFLOWLOGS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert len(names) > 10
    problems = [f"{path}: {problem}" for path, name in sorted(names) if (problem := settings_field_problem(name))]
    assert problems == []


def worker_routes() -> set[str]:
    return {m for path in (ROOT / "pipeline").rglob("*.py") for m in re.findall(r"\.page\(\s*[\"']([^\"'{]+)[\"']", path.read_text())}


def worker_paths() -> list[tuple[str, str]]:
    """(where, path) of every probe, health check and scrape path aimed at a worker."""
    found = []
    for name, service in compose_project(COMPOSE_FILES[0]).items():
        if is_flowlogs_service(service) and (service.get("command") or [None])[0] == "worker":
            test = " ".join((service.get("healthcheck") or {}).get("test") or [])
            found += [(f"compose {name} healthcheck", p) for p in re.findall(rf"https?://[\w.]+:{WORKER_PORT}(/[\w/.-]*)", test)]
            labels = service.get("labels") or {}
            if labels.get("prometheus.io/port") == str(WORKER_PORT):
                found.append((f"compose {name} labels", labels["prometheus.io/path"]))
    for where, doc in manifests():
        template = doc.get("spec", {}).get("template", {})
        annotations = template.get("metadata", {}).get("annotations", {})
        if annotations.get("prometheus.io/port") == str(WORKER_PORT):
            found.append((f"{where} annotations", annotations["prometheus.io/path"]))
        for c in template.get("spec", {}).get("containers", []):
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = c.get(probe, {}).get("httpGet")
                if get and ports.get(get["port"], get["port"]) == WORKER_PORT:
                    found.append((f"{where} {c['name']} {probe}", get["path"]))
    return found


def test_probes_and_scrapes_ask_the_worker_for_routes_it_has() -> None:
    paths = worker_paths()
    assert {p for _, p in paths} >= {"/health", "/ready", "/metrics"}
    routes = worker_routes()
    assert [(where, p) for where, p in paths if p not in routes] == []


def test_kubernetes_objects_fit_together() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in manifests()}
    secrets = {name: d.get("stringData", {}) | d.get("data", {}) for (kind, name), d in docs.items() if kind == "Secret"}
    config_maps = {name: d.get("data", {}) for (kind, name), d in docs.items() if kind == "ConfigMap"}
    workloads = {key: d for key, d in docs.items() if key[0] in ("Deployment", "DaemonSet")}
    for (kind, name), d in workloads.items():
        template = d["spec"]["template"]
        assert d["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items(), f"{kind} {name}"
        for c in template["spec"]["containers"]:
            port_names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                assert not isinstance(port, str) or port in port_names, f"{kind} {name}: {probe} port {port}"
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                assert ref is None or ref["key"] in secrets.get(ref["name"], {}), f"{kind} {name}: {item['name']} from {ref}"
        for v in template["spec"].get("volumes", []):
            assert "configMap" not in v or v["configMap"]["name"] in config_maps, f"{kind} {name}: volume {v['name']}"
    for (kind, name), service in docs.items():
        if kind == "Service":
            selector = service["spec"]["selector"].items()
            selected = [d for d in workloads.values() if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
            assert selected, f"Service {name} selects no pods"
            for port in service["spec"]["ports"]:
                names = {p.get("name") for d in selected for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                assert not isinstance(port["targetPort"], str) or port["targetPort"] in names, f"Service {name}: {port}"
    partitions = Settings.model_validate(yaml.safe_load(config_maps["flowlogs-config"]["flowlogs.yaml"])).kafka.partitions
    worker = docs[("Deployment", "flowlogs-worker")]
    assert worker["spec"]["replicas"] <= partitions, "workers beyond the frames topic's partitions would idle"
    agent = docs[("DaemonSet", "flowlogs-agent")]["spec"]["template"]["spec"]
    assert agent["hostNetwork"] and agent["nodeSelector"] and agent["tolerations"]
    assert {"NET_RAW", "NET_ADMIN"} <= set(agent["containers"][0]["securityContext"]["capabilities"]["add"])


def test_compose_scales_and_mounts_what_exists() -> None:
    project = compose_project(COMPOSE_FILES[0])
    assert project["kafka"]["image"] == "apache/kafka:4.1.1"
    assert re.fullmatch(r"clickhouse/clickhouse-server:\d+(\.\d+)+", project["clickhouse"]["image"]), "pin the ClickHouse tag"
    worker = project["worker"]
    assert "container_name" not in worker and "ports" not in worker, "`--scale worker=N` needs no fixed name or host port"
    partitions = Settings.model_validate(read_yaml(COMPOSE / "flowlogs.yaml")).kafka.partitions
    readme = (COMPOSE / "README.md").read_text()
    scales = [int(n) for n in re.findall(r"--scale worker=(\d+)", readme)]
    assert scales and max(scales) <= partitions
    for path in COMPOSE_FILES:
        for service in compose_project(path).values():
            for volume in service.get("volumes") or []:
                source = volume.split(":")[0]
                assert "$" in source or not source.startswith(".") or (COMPOSE / source).exists(), f"{path.name}: {volume}"
        required = set(re.findall(r"\$\{(\w+)(?::\?[^}]*)?\}", path.read_text()))
        assert required <= set(COMPOSE_VARIABLES), required
        assert all(f"{name}=" in readme for name in required), "README.md must say how to set them"


def test_systemd_unit_is_hardened() -> None:
    service = dict(unit_entries(SYSTEMD / "flowlogs-agent.service")["Service"])
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    assert set(service["AmbientCapabilities"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert set(service["CapabilityBoundingSet"].split()) == {"CAP_NET_RAW", "CAP_NET_ADMIN"}
    assert service["ProtectSystem"] == "strict" and service["Restart"] == "on-failure"
    assert service.get("MemoryDenyWriteExecute", "no") == "no", "numba compiles code at run time"


def test_image_holds_the_console_script_and_every_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert IMAGE_ENTRYPOINT == list(project["project"]["scripts"]) == ["flowlogs"]
    assert re.search(r"^FROM python:3\.11-slim$", (COMPOSE / "Dockerfile").read_text(), re.MULTILINE)
    # The build context is an allow-list: a package added to pyproject.toml must be let in too.
    allowed = set(re.findall(r"^!(\S+)$", (COMPOSE / "Dockerfile.dockerignore").read_text(), re.MULTILINE))
    needed = {name.split(".")[0] for name in project["tool"]["setuptools"]["packages"]} | {"pyproject.toml", "README.md"}
    needed |= set(re.findall(r"pip install .*-c (\S+)", (COMPOSE / "Dockerfile").read_text()))
    assert "constraints.txt" in needed and needed <= allowed, needed - allowed


def test_constraints_pin_every_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in ("test", "tansu") for r in project["optional-dependencies"][extra]]
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pinned[canonicalize_name(name)] = version
    for requirement in wanted:
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(version), f"constraints.txt pins {requirement.name} {version}, outside {requirement}"


# ---------------------------------------------------------------------------------------------
# Each check fails on a broken copy


def worker_container() -> Container:
    return next(c for c in CONTAINERS if c.source.endswith("compose.yaml: worker"))


def test_a_misspelled_settings_key_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken_file = tmp_path / "flowlogs.yaml"
    broken_file.write_text((COMPOSE / "flowlogs.yaml").read_text().replace("window_seconds:", "windw_seconds:"))
    container = worker_container()
    mounts = {**container.mounts, PurePosixPath("/config/flowlogs.yaml"): broken_file}
    container = Container(container.source, container.argv, container.env, mounts)
    settings, problems = load_container_settings(container, monkeypatch, tmp_path)
    assert settings is None and any("windw_seconds" in p for p in problems)


def test_a_misspelled_variable_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    container = worker_container()
    env = {**container.env, "FLOWLOGS_KAFKA__BOOTSTRAP_SERVER": "kafka:9092"}
    _, problems = load_container_settings(Container(container.source, container.argv, env, container.mounts), monkeypatch, tmp_path)
    assert any("bootstrap_server" in p for p in problems)
    assert settings_field_problem("FLOWLOGS_WORKER") is not None
    assert settings_field_problem("FLOWLOGS_DETECT__SCAN__HOST") is not None
    assert settings_field_problem("FLOWLOGS_DETECT__SCAN__HOSTS") is None


def test_an_unmounted_inventory_fails(tmp_path: Path) -> None:
    container = worker_container()
    settings = Settings.model_validate({"worker": {"inventory": "/config/elsewhere.yaml"}})
    assert mounted_file_problems(container, settings, tmp_path) == ["/config/elsewhere.yaml: named, but not mounted"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["flowlogs", "agent", "--pcap", "a.pcap", "--inventory", "i.yaml", "--sped", "1"], "--sped"),
        (["flowlogs", "workers"], "workers"),
        (["flowlogs", "agent", "--inventory", "i.yaml"], "exactly one source"),
        (["flowlogs", "agent", "--interface", "eth1"], "needs --inventory"),
        (["flowlogs", "report", "top-talkers", "--since", "1h", "--bogus", "x"], "--bogus"),
        (["sh", "-c", "exec flowlogs agent --vxlan 4789 --inventory i.yaml --tail"], "--tail"),
        (["python", "-m", "flowlogs.nope"], "flowlogs.nope"),
    ],
)
def test_a_bogus_command_fails(argv: list[str], expected: str) -> None:
    problems = command_problems(argv)
    assert any(expected in p for p in problems), problems


def test_a_misspelled_compose_key_fails(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text((COMPOSE / "compose.yaml").read_text().replace("    healthcheck:", "    healthchek:", 1))
    assert "healthchek" in compose_schema_problems(broken)


def test_a_misspelled_manifest_field_fails() -> None:
    deployment = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == "Deployment"))
    deployment["spec"]["replica"] = deployment["spec"].pop("replicas")
    assert "replica" in (k8s_schema_problem(deployment, K8S_VERSIONS[-1]) or "")
    deployment = copy.deepcopy(next(d for _, d in manifests() if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [6066]
    assert k8s_schema_problem(deployment, K8S_VERSIONS[0]) is not None


def test_a_route_the_worker_lacks_fails() -> None:
    routes = worker_routes()
    assert {"/health", "/stats"} <= routes
    assert "/readyz" not in routes
