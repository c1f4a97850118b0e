"""The deployment files (issue 17 item 2): ops/Dockerfile, ops/compose.yaml, ops/Caddyfile and
ops/k8s/. This machine has no Docker daemon or cluster, so the files are checked for what would
break a deployment: probes on the right paths, resources on every container, non-root users,
the migration Job, the HPA's metric being one the server really exports, selectors that match,
every FACEPROV_* variable being one faceprov reads, and the Dockerfile copying only what exists.
When kubectl is installed, `kubectl kustomize` must also build both variants."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "ops"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s() -> dict[str, dict]:
    out = {}
    for f in sorted((OPS / "k8s" / "base").glob("*.yaml")):
        for d in _docs(f):
            if "kind" in d and d["kind"] != "Kustomization":
                out[d["kind"]] = d
    return out


def _known_env() -> set[str]:
    src = (ROOT / "faceprov" / "config.py").read_text()
    names = {f"FACEPROV_{n}" for n in re.findall(r'_env\("([A-Z0-9_]+)"\)', src)}
    block = re.search(r'for name, conv in \((.*?)\):\s*\n\s*if \(v := _env\(f"SERVER_\{name\}"\)\)', src, re.S)
    names |= {f"FACEPROV_SERVER_{n}" for n in re.findall(r'\("([A-Z_]+)",', block.group(1))}
    return names


def test_deployment_probes_resources_and_security():
    k = _k8s()
    dep = k["Deployment"]
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    # the startup probe must leave time for the models to load (about a minute on 2 cores)
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120
    port = c["ports"][0]["containerPort"]
    assert c["args"][c["args"].index("--port") + 1] == str(port)
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
    # longer than the server's own per-request timeout, so a draining pod finishes its requests
    from server.state import ServerConfig

    assert spec["terminationGracePeriodSeconds"] > ServerConfig().request_timeout
    # selectors match the pod labels
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for obj in (dep["spec"]["selector"]["matchLabels"], k["Service"]["spec"]["selector"],
                k["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]):
        assert obj.items() <= labels.items()
    assert k["PodDisruptionBudget"]["spec"]["minAvailable"] < dep["spec"]["replicas"]
    assert k["Service"]["spec"]["ports"][0]["targetPort"] == c["ports"][0]["name"]


def test_secrets_and_env_are_real_settings():
    k = _k8s()
    known = _known_env()
    secret_keys = set(k["Secret"]["stringData"])
    for kind in ("Deployment", "Job"):
        spec = k[kind]["spec"]["template"]["spec"]
        mounts = {v["name"]: v for v in spec["volumes"]}
        for c in spec["containers"]:
            for e in c["env"]:
                assert e["name"] in known, f"{kind}: {e['name']} is not a setting faceprov reads"
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_keys
                if "value" in e and e["value"].startswith("/run/secrets/faceprov/"):
                    assert e["value"].rsplit("/", 1)[1] in secret_keys  # a file the Secret volume has
            assert c["resources"]["limits"]["memory"]
            for vm in c.get("volumeMounts", []):
                assert vm["name"] in mounts
    assert "FACEPROV_AUDIT_KEY_FILE" in {e["name"] for e in k["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    for doc in _docs(OPS / "compose.yaml"):
        for name, svc in doc["services"].items():
            env = svc.get("environment") or {}
            for var in env:
                if var.startswith("FACEPROV_"):
                    assert var in known, f"compose {name}: {var}"


def test_password_file_goes_into_the_url(tmp_path, monkeypatch):
    from faceprov.config import reset_settings, settings

    pw = tmp_path / "pw"
    pw.write_text("s3cr%t:@/\n")
    monkeypatch.setenv("FACEPROV_DB", "postgresql://faceprov@db:5432/faceprov")
    monkeypatch.setenv("FACEPROV_DB_PASSWORD_FILE", str(pw))
    reset_settings()
    try:
        from sqlalchemy.engine import make_url

        u = make_url(settings().db_url)
        assert u.password == "s3cr%t:@/" and u.host == "db" and u.username == "faceprov"
        monkeypatch.setenv("FACEPROV_DB_PASSWORD_FILE", str(tmp_path / "missing"))
        reset_settings()
        with pytest.raises(ValueError, match="cannot read"):
            settings()
    finally:
        monkeypatch.delenv("FACEPROV_DB_PASSWORD_FILE")
        reset_settings()


def test_migration_job_and_autoscaling_on_a_real_metric():
    k = _k8s()
    job = k["Job"]["spec"]["template"]["spec"]
    assert job["containers"][0]["args"] == ["db", "upgrade"] and job["restartPolicy"] in ("OnFailure", "Never")
    from faceprov.cli import app as cli_app  # `faceprov db upgrade` exists
    from typer.main import get_command

    db = get_command(cli_app).commands["db"]
    assert "upgrade" in db.commands
    hpa = k["HorizontalPodAutoscaler"]["spec"]
    names = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    app_src = (ROOT / "server" / "app.py").read_text()
    for n in names:  # a metric the server really exports
        assert f'metrics.gauge("{n}"' in app_src, n
    assert hpa["minReplicas"] >= k["PodDisruptionBudget"]["spec"]["minAvailable"] + 1


def test_gpu_variant():
    kz = _docs(OPS / "k8s" / "gpu" / "kustomization.yaml")[0]
    assert kz["resources"] == ["../base"] and kz["images"][0]["newTag"] == "cuda"
    patch = _docs(OPS / "k8s" / "gpu" / kz["patches"][0]["path"])[0]["spec"]["template"]["spec"]
    c = patch["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and "--device" in c["args"]
    assert c["args"][c["args"].index("--device") + 1] == "cuda"
    assert patch["nodeSelector"]


def test_kustomize_builds_both_variants():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        # the structural checks above still ran; only the build needs kubectl
        pytest.skip("kubectl not installed")
    for v in ("base", "gpu"):
        out = subprocess.run([kubectl, "kustomize", str(OPS / "k8s" / v)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        kinds = {d["kind"] for d in yaml.safe_load_all(out.stdout) if d}
        assert {"Deployment", "Job", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"} <= kinds


def test_compose_replicas_database_and_proxy():
    (doc,) = _docs(OPS / "compose.yaml")
    s = doc["services"]
    assert "pgvector" in s["db"]["image"] and s["db"]["healthcheck"]
    assert s["migrate"]["command"] == ["db", "upgrade"]
    assert s["faceprov"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert s["faceprov"]["deploy"]["replicas"] >= 2
    assert s["faceprov"]["deploy"]["resources"]["limits"]["memory"]
    assert any(v.startswith("./Caddyfile") for v in s["proxy"]["volumes"])
    caddy = (OPS / "Caddyfile").read_text()
    assert "health_uri /readyz" in caddy and "dynamic a faceprov 8765" in caddy
    for sec in doc["secrets"].values():
        assert sec["file"].startswith("./secrets/")


def test_dockerfile():
    text = (OPS / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    users = [ln.split(None, 1)[1] for ln in lines if ln.startswith("USER ")]
    assert users and not users[-1].split(":")[0] in ("0", "root")
    # the models are fetched at build time, as the unprivileged user (into its FACEPROV_HOME)
    fetch = next(i for i, ln in enumerate(lines) if "faceprov assets fetch" in ln)
    assert fetch > next(i for i, ln in enumerate(lines) if ln.startswith("USER "))
    assert re.search(r"HEALTHCHECK .*\n?.*/readyz", text)
    stages = set(re.findall(r"^FROM \S+ AS (\S+)", text, re.M))
    assert {"torch-cpu", "torch-cuda"} <= stages and "FROM torch-${VARIANT}" in text
    # torch pinned like ops/setup.sh; never the facenet-pytorch that pins an old torch
    assert '"torch==2.14.1"' in text and "facenet-pytorch==2.5.3" in text
    ignore = (OPS / "Dockerfile.dockerignore").read_text().split()
    for ln in lines:
        if ln.startswith("COPY "):
            *srcs, _dest = ln.split()[1:]
            for src in srcs:
                assert (ROOT / src).exists(), src
                assert f"!{src}" in ignore or f"!{src}/**" in ignore, f"{src} is excluded by the dockerignore"
    # the variables it sets are settings faceprov reads
    for var in re.findall(r"(FACEPROV_[A-Z_]+)=", text):
        assert var in _known_env(), var
