"""The README's "On a cluster" section, command by command, as a new user runs it: helm install with the
chart's defaults, the credentials Secret, the example StreamJob, a spec change by kubectl patch (a
savepoint upgrade), a rescale by kubectl scale, and the last savepoint's location.

On the local cluster two things differ, and only these: the example S3 server's images cannot run here
(the stand-in kubelet runs only Stator's own binaries), so its manifest is checked with a server-side
dry run (the real API server's validation and Pod Security `restricted`) and moto serves the bucket
instead; and there is no cluster DNS, so the StreamJob's S3 endpoint names moto's address instead of
http://s3.stator-s3.svc:9000. On a real cluster (STATOR_E2E_KUBECONFIG) every command runs as written."""
import re
import shlex
from pathlib import Path

import yaml
from harness import wait_until

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## On a cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_command_of_the_readme_cluster_section_works(cluster, namespace, s3):
    commands = readme_commands()
    assert commands[0].startswith("helm install") and any("kubectl patch sj" in c for c in commands)
    s3.client().create_bucket(Bucket="stator")
    release, s3_namespace = None, None
    try:
        for line in commands:
            argv = shlex.split(line)
            if argv[:2] == ["helm", "install"]:
                name, chart = argv[2], argv[3]
                ns = argv[argv.index("-n") + 1]
                assert "--create-namespace" in argv
                cluster.create_namespace(name=ns)
                cluster.helm_install(str(REPO / chart), name, ns)
                release = (name, chart, ns)
                cluster.wait(f"deploy/{name}", "condition=Available", ns, timeout="120s")
                continue
            assert argv[0] == "kubectl", line
            args = argv[1:]
            if cluster.local and args[:3] == ["apply", "-f", "examples/s3-server.yaml"]:
                docs = list(yaml.safe_load_all((REPO / args[2]).read_text()))
                cluster.apply([d for d in docs if d["kind"] == "Namespace"])  # a dry run cannot fill a dry-run namespace
                s3_namespace = next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
                r = cluster.kubectl("apply", "--dry-run=server", "-f", "-",
                                    input=yaml.safe_dump_all([d for d in docs if d["kind"] != "Namespace"]))
                assert "Warning" not in r.stderr and r.stdout.count("(server dry run)") == len(docs) - 1, r
                continue
            if cluster.local and "job/make-bucket" in args:
                continue  # moto holds the bucket (see the module's doc)
            if args[:3] == ["apply", "-f", "examples/wordcount.yaml"]:
                job = yaml.safe_load((REPO / args[2]).read_text())
                if cluster.local:
                    job["spec"]["state"]["s3"]["endpoint"] = s3.endpoint
                cluster.apply(job, namespace=namespace)
                continue
            r = cluster.kubectl(*[str(REPO / a) if a.startswith("examples/") else a for a in args],
                                namespace=None if "-n" in args else namespace, timeout=360)
            if args[:2] == ["get", "sj"] and "-o" not in args:
                assert r.stdout.split("\n")[1].split()[:2] == ["wordcount", "Running"], r.stdout
        location = r.stdout.strip()
        st = cluster.get("sj", "wordcount", namespace)["status"]
        assert st["readyReplicas"] == 3 and st["replicas"] == 3, st
        assert location == st["lastSavepoint"]["location"] and location.startswith("s3://stator/jobs/"), location
        assert st["lastSavepoint"]["reason"] == "rescale", "the last command's savepoint was the rescale's"
        reasons = [sp["reason"] for sp in st["savepoints"]]
        assert "upgrade" in reasons, reasons
        wait_until(lambda: s3.client().list_objects_v2(Bucket="stator", Prefix="jobs/").get("KeyCount"),
                   timeout=10, what="state in the bucket the README names")
    finally:
        if release:
            cluster.kubectl("delete", "sj", "--all", "--wait=true", "--timeout=120s", namespace=namespace, check=False)
            cluster.helm_uninstall(str(REPO / release[1]), release[0], release[2])
            cluster.delete_namespace(release[2])
        if s3_namespace:
            cluster.delete_namespace(s3_namespace)
