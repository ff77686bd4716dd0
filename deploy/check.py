"""Offline checks of the deployment files, run by scripts/test.sh.

- hadolint lints the Dockerfile;
- the files its dependency layer copies (through .dockerignore) are enough
  for cargo to load the workspace, as the image build needs;
- kubernetes-validate checks every manifest against the Kubernetes schema (strict);
- the TOML inside the ConfigMap passes `agentos-gateway check`;
- terminationGracePeriodSeconds leaves room for the preStop sleep, the drain
  grace, the drain timeout and the final flush, so the kubelet never
  SIGKILLs a draining gateway;
- the container ports match the TOML's listen addresses, Prometheus is
  pointed at the admin port's /metrics, the probes use the public port, and
  the Service exposes the public port only.

Usage: python deploy/check.py path/to/agentos-gateway
"""

import fnmatch
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31.0"
FINAL_FLUSH_SECONDS = 20  # server.rs: FINAL_FLUSH for streams, then for cancels
DEFAULT_LISTEN = "0.0.0.0:7777"  # config.rs: the [server] listen default
DEFAULT_ADMIN_LISTEN = "0.0.0.0:9901"  # config.rs: DEFAULT_ADMIN_LISTEN


def run(*args, **kwargs):
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run(args, check=True, **kwargs)


def main() -> None:
    gateway = pathlib.Path(sys.argv[1]).resolve()
    bindir = pathlib.Path(sys.executable).parent
    run(bindir / "hadolint", ROOT / "Dockerfile")
    check_build_context()

    manifests = sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    run(bindir / "kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, *manifests)

    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (MANIFESTS / resource).is_file(), f"kustomization names missing {resource}"

    configmap = yaml.safe_load((MANIFESTS / "configmap.yaml").read_text())
    toml_text = configmap["data"]["gateway.toml"]
    deployment = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = dict(os.environ)
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "from-a-secret")
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "gateway.toml"
        path.write_text(toml_text)
        run(gateway, "check", "--config", path, env=env)

    def seconds(key: str, default: float) -> float:
        match = re.search(rf"^\s*{key}\s*=\s*([0-9.]+)", toml_text, re.M)
        return float(match.group(1)) if match else default

    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + seconds("drain_grace", 5) + seconds("drain_timeout", 300) + FINAL_FLUSH_SECONDS
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= needed, f"terminationGracePeriodSeconds {grace} < {needed} needed to drain"
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
    service = yaml.safe_load((MANIFESTS / "service.yaml").read_text())
    check_ports(toml_text, deployment, service)
    print(f"deploy checks passed (grace {grace}s >= {needed}s needed)")


def listen_port(toml_text: str, table: str, default: str) -> int:
    """The port of `listen` in a TOML `[table]` (its default when unset)."""
    section = re.search(rf"^\[{re.escape(table)}\]\s*$(.*?)(?=^\s*\[|\Z)", toml_text, re.M | re.S)
    match = section and re.search(r'^\s*listen\s*=\s*"([^"]*)"', section.group(1), re.M)
    listen = match.group(1) if match else default
    assert listen, f"[{table}] listen is off; the manifests expect it on"
    return int(listen.rsplit(":", 1)[1])


def check_ports(toml_text: str, deployment: dict, service: dict) -> None:
    """Public traffic and probes on the public port; Prometheus on the
    admin port, which no Service exposes."""
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    public = listen_port(toml_text, "server", DEFAULT_LISTEN)
    admin = listen_port(toml_text, "admin", DEFAULT_ADMIN_LISTEN)
    assert ports.get("http") == public, f"container port http {ports.get('http')} != [server] listen {public}"
    assert ports.get("admin") == admin, f"container port admin {ports.get('admin')} != [admin] listen {admin}"
    annotations = template["metadata"]["annotations"]
    assert annotations.get("prometheus.io/port") == str(admin), "Prometheus must scrape the admin port"
    assert annotations.get("prometheus.io/path") == "/metrics"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = container[probe]["httpGet"]["port"]
        assert port in ("http", public), f"{probe} must use the public port, not {port}"
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert target not in ("admin", admin), "the Service must not expose the admin port"


def check_build_context() -> None:
    """Copies what the Dockerfile's first build steps copy, as .dockerignore
    lets them through, adds the stub sources its first RUN writes, and asks
    cargo to load the workspace from that alone."""
    ignore = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]

    def included(rel: str) -> bool:
        keep = False
        for pattern in ignore:
            negated = pattern.startswith("!")
            pattern = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/"):
                keep = negated
        return keep

    steps = (ROOT / "Dockerfile").read_text().split("\nRUN ", 1)[0]
    copies = [line.split()[1:] for line in steps.splitlines() if line.startswith("COPY ")]
    with tempfile.TemporaryDirectory() as tmp:
        context = pathlib.Path(tmp)
        for *sources, _dest in copies:
            for source in sources:
                for path in [ROOT / source, *(ROOT / source).rglob("*")]:
                    rel = path.relative_to(ROOT).as_posix()
                    if path.is_file() and included(rel):
                        (context / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, context / rel)
        (context / "src").mkdir(exist_ok=True)
        (context / "src" / "main.rs").write_text("fn main() {}\n")
        (context / "src" / "lib.rs").write_text("")
        run("cargo", "metadata", "--locked", "--offline", "--no-deps", "--format-version", "1",
            cwd=context, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
