"""How replicas reach their storage on a cluster: with a cloud identity (a web-identity token of the
pod's ServiceAccount, exchanged at a token service for credentials) instead of static credentials."""
import base64
import json
import os

from scenario import Wordcount, start_operator  # noqa: F401  (start_operator: the operator fixture)
import pytest


@pytest.fixture
def operator(cluster, processes):
    return start_operator(cluster, processes)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_a_web_identity_reaches_s3_with_the_pods_service_account_token(cluster, namespace, s3, operator):
    wc = Wordcount(cluster, s3, namespace, name="wi")
    state = wc.job["spec"]["state"]
    del state["credentialsSecret"]
    # moto's server answers AssumeRoleWithWebIdentity as a token service would (it does not verify the token).
    state["s3"]["webIdentity"] = {"roleArn": "arn:aws:iam::123456789012:role/stator", "stsEndpoint": s3.endpoint}
    wc.apply()
    wc.wait_running(replicas=2)
    pod = wc.pods()[0]
    sidecar = pod["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["AWS_ROLE_ARN"] == "arn:aws:iam::123456789012:role/stator"
    assert "AWS_ACCESS_KEY_ID" not in env and pod["spec"]["automountServiceAccountToken"] is False
    if cluster.local:
        d = os.path.join(cluster.localkube.kubelet_dir, "pods",
                         f"{namespace}_{pod['metadata']['name']}_{pod['metadata']['uid']}", "volumes", "aws-identity")
        claims = jwt_claims(open(os.path.join(d, "token")).read())
        assert claims["aud"] == ["sts.amazonaws.com"]
        assert claims["sub"] == f"system:serviceaccount:{namespace}:default"
        assert claims["kubernetes.io"]["pod"]["name"] == pod["metadata"]["name"], "bound to the pod"
    # The state reached S3 with the exchanged credentials: a savepoint of the running job.
    location = wc.savepoint()
    assert s3.keys(location.split(f"s3://{s3.bucket}/", 1)[1] + "/")
