"""Offline checks of the deployment files, run by scripts/test.sh.

- hadolint lints the Dockerfile;
- the files its dependency layer copies (through .dockerignore) are enough
  for cargo to load the workspace, as the image build needs;
- kubernetes-validate checks every manifest against the Kubernetes schema (strict);
- the TOML inside the ConfigMap passes `agentos-gateway check`;
- terminationGracePeriodSeconds leaves room for the preStop sleep, the drain
  grace, the drain timeout and the final flush, so the kubelet never
  SIGKILLs a draining gateway.

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
    print(f"deploy checks passed (grace {grace}s >= {needed}s needed)")


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
