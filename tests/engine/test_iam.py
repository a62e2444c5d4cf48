"""IAM's policy evaluation as raymaker applies it: wildcards, case rules, Deny winning, nothing allowed
by default, and documents refused when stored rather than read loosely later."""

from __future__ import annotations

import pytest

from raymaker.engine import iam
from raymaker.protocol.errors import ValidationError

JOB = "arn:aws:sagemaker:us-east-1:000000000000:training-job/team-a-job"


def policy(*statements: dict) -> dict:
    return iam.parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


def test_allow_deny_and_the_default() -> None:
    reader = policy({"Effect": "Allow", "Action": ["sagemaker:Describe*", "sagemaker:List*"], "Resource": "*"})
    assert iam.decide([reader], "sagemaker:DescribeTrainingJob", JOB) == "allow"
    assert iam.decide([reader], "sagemaker:describetrainingjob", JOB) == "allow"  # actions: any case
    assert iam.decide([reader], "sagemaker:CreateTrainingJob", JOB) == "implicit-deny"
    assert iam.decide([], "sagemaker:ListTrainingJobs", "*") == "implicit-deny"
    deny = policy({"Effect": "Deny", "Action": "sagemaker:*", "Resource": "arn:aws:sagemaker:*:*:training-job/team-a-*"})
    assert iam.decide([reader, deny], "sagemaker:DescribeTrainingJob", JOB) == "deny"  # Deny wins
    assert iam.decide([reader, deny], "sagemaker:DescribeTrainingJob", JOB.replace("team-a", "team-b")) == "allow"
    assert iam.decide([reader, deny], "sagemaker:DescribeTrainingJob", JOB.upper()) == "allow"  # ARNs: exact case
    one = policy({"Effect": "Allow", "Action": "sagemaker:DescribeTrainingJo?", "Resource": JOB})
    assert iam.decide([one], "sagemaker:DescribeTrainingJob", JOB) == "allow"
    assert iam.decide([one], "sagemaker:DescribeTrainingJobs", JOB) == "implicit-deny"


def test_actions_and_resources_of_requests() -> None:
    assert iam.action_of("CreateUser") == "iam:CreateUser"
    assert iam.action_of("GetResourceCost") == "sagemaker:GetResourceCost"
    assert iam.resource_of("DescribeTrainingJob", {"TrainingJobName": "Team-A-Job"}) == JOB  # ARNs lower-case names
    assert iam.resource_of("CreateEndpoint", {"EndpointName": "ep", "EndpointConfigName": "cfg"}).endswith(":endpoint/ep")
    assert iam.resource_of("ListTrainingJobs", {}) == "*"
    assert iam.resource_of("GetResourceCost", {"ResourceArn": JOB}) == JOB
    assert iam.resource_of("DeleteUser", {"UserName": "bob"}) == "arn:aws:iam::000000000000:user/bob"


@pytest.mark.parametrize(
    ("document", "names"),
    [
        ("{not json", "not JSON"),
        ({"Version": "2012-10-17"}, "Statement"),
        ({"Statement": []}, "non-empty"),
        ({"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}, "Effect"),
        ({"Statement": [{"Effect": "Allow", "Resource": "*"}]}, "Action"),
        ({"Statement": [{"Effect": "Allow", "Action": "DescribeTrainingJob", "Resource": "*"}]}, "service prefix"),
        ({"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*", "Action": "*"}]}, "NotAction"),
        ({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                         "Condition": {"StringEquals": {"aws:username": "bob"}}}]}, "Condition"),
    ],
)
def test_documents_raymaker_cannot_read_exactly_are_refused(document, names) -> None:
    with pytest.raises(ValidationError, match=names):
        iam.parse_policy(document)
