"""The docker-compose stack and its image, checked statically (Docker cannot run here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = {"airflow-worker", "airflow-worker-training", "airflow-worker-general"}
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-init", *WORKERS}
REQUIRED_VAR = re.compile(r"\$\{(\w+):\?[^}]*\}")


def env_of(service: str) -> dict[str, str]:
    return SERVICES[service].get("environment", {})


def test_official_airflow3_layout():
    assert {"postgres", "redis"} | AIRFLOW_SERVICES <= set(SERVICES)
    commands = {name: SERVICES[name].get("command") for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"] == "api-server"
    assert commands["airflow-scheduler"] == "scheduler"
    assert commands["airflow-dag-processor"] == "dag-processor"
    assert commands["airflow-triggerer"] == "triggerer"
    for worker in WORKERS:
        assert commands[worker].startswith("celery worker --queues ")
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert env_of(name)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env_of(name)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
            "http://airflow-apiserver:8080/")
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES
    # Scalable workers: nothing that pins one container.
    assert not {"container_name", "ports", "hostname"} & set(SERVICES["airflow-worker"])
    assert SERVICES["airflow-worker"]["depends_on"]["airflow-init"]["condition"] == (
        "service_completed_successfully")


def worker_layout(service: str) -> tuple[str, int, str]:
    """(queue, concurrency, Celery pool) of a compose worker, queue names at their defaults."""
    args = re.sub(r"\$\{\w+:-(\w+)\}", r"\1", SERVICES[service]["command"]).split()
    return (args[args.index("--queues") + 1], int(args[args.index("--concurrency") + 1]),
            env_of(service)["AIRFLOW__CELERY__POOL"])


def test_workers_serve_the_queues_like_the_native_stack(tmp_path):
    from tagging.ops.stack import Stack
    from tagging.settings import Settings

    compose = {worker_layout(w) for w in WORKERS}
    stack = Stack(tmp_path, state={"ports": {"api": 1, "postgres": 2, "redis": 3},
                                   "secrets": dict.fromkeys(("postgres", "redis", "jwt",
                                                             "api", "fernet"), "x")})
    native = {(queue, n, "solo" if n == 1 else "prefork") for _, queue, n in stack.workers()}
    assert compose == native == {("tagging", 1, "solo"), ("training", 1, "solo"),
                                 ("default", 2, "prefork")}
    defaults, env = Settings(), env_of("airflow-scheduler")
    for name, default in [("TAGGING_TRAINING_QUEUE", defaults.training_queue),
                          ("TAGGING_TAGGING_QUEUE", defaults.tagging_queue)]:
        assert env[name] == f"${{{name}:-{default}}}"


def test_catalogue_and_registry_on_object_storage():
    for name in AIRFLOW_SERVICES:
        env = env_of(name)
        assert env["TAGGING_CATALOGUE"] == "${TAGGING_CATALOGUE:-s3://tagging/catalogue}"
        assert env["TAGGING_REGISTRY"] == "${TAGGING_REGISTRY:-s3://tagging/registry}"
        assert env["AWS_ENDPOINT_URL"] == "${AWS_ENDPOINT_URL:-http://s3:8333}"
        assert not any("/data/" in v for v in SERVICES[name]["volumes"])  # no shared disk
    s3 = SERVICES["s3"]
    assert "weed mini" in " ".join(s3["command"]) and "s3-data:/data" in s3["volumes"]
    assert {"s3-data", "postgres-db-volume"} <= set(COMPOSE["volumes"])
    init = " ".join(SERVICES["airflow-init"]["command"])
    assert "pools set tagging_training 1" in init


def test_no_secret_in_the_file_and_every_required_one_in_env_example():
    secret_key = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$")
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        for key, value in env.items():
            if secret_key.search(key):
                assert REQUIRED_VAR.fullmatch(str(value)), f"{name}: {key} is not from .env"
            assert "airflow:airflow@" not in str(value)
    required = set(REQUIRED_VAR.findall((REPO / "docker-compose.yml").read_text()))
    example = (REPO / ".env.example").read_text()
    listed = dict(re.findall(r"^(\w+)=(.*)$", example, flags=re.M))
    assert required <= set(listed)
    assert all(listed[name] == "" for name in required if secret_key.search(name))


def test_image_is_the_official_airflow_one_with_the_project_under_its_constraints():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11" in dockerfile
    install = r'pip install .*"apache-airflow==\$\{AIRFLOW_VERSION\}" /opt/catalogue-tagging'
    assert re.search(install, dockerfile)
    assert '--constraint "${HOME}/constraints.txt"' in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)
