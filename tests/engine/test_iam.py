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
                         "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2026-01-01"}}}]}, "DateGreaterThan"),
        ({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                         "Condition": {"StringEquals": {"aws:username": 3}}}]}, "list of strings"),
    ],
)
def test_documents_raymaker_cannot_read_exactly_are_refused(document, names) -> None:
    with pytest.raises(ValidationError, match=names):
        iam.parse_policy(document)


def test_conditions_and_policy_variables_decide_on_the_maker() -> None:
    own = iam.parse_policy(iam.OWN_RESOURCES_POLICY)
    alice = {"aws:username": "alice"}
    assert iam.decide([own], "sagemaker:DescribeTrainingJob", JOB, {**alice, iam.OWNER_KEY: "alice"}) == "allow"
    assert iam.decide([own], "sagemaker:StopTrainingJob", JOB, {**alice, iam.OWNER_KEY: "bob"}) == "implicit-deny"
    assert iam.decide([own], "sagemaker:DescribeTrainingJob", JOB, alice) == "implicit-deny"  # no maker known
    assert iam.decide([own], "sagemaker:CreateTrainingJob", JOB, alice) == "allow"
    assert iam.decide([own], "sagemaker:ListTrainingJobs", "*", alice) == "allow"
    not_bob = policy({"Effect": "Deny", "Action": "sagemaker:Delete*", "Resource": "*",
                      "Condition": {"StringNotEquals": {iam.OWNER_KEY: "${aws:username}"}}})
    admin = iam.parse_policy(iam.ADMINISTRATOR_POLICY)
    assert iam.decide([admin, not_bob], "sagemaker:DeleteModel", JOB, {**alice, iam.OWNER_KEY: "bob"}) == "deny"
    assert iam.decide([admin, not_bob], "sagemaker:DeleteModel", JOB, {**alice, iam.OWNER_KEY: "alice"}) == "allow"
    like = policy({"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*",
                   "Condition": {"StringLike": {iam.OWNER_KEY: "team-a-*"}}})
    assert iam.decide([like], "sagemaker:DescribeModel", JOB, {iam.OWNER_KEY: "team-a-carol"}) == "allow"
    assert iam.decide([like], "sagemaker:DescribeModel", JOB, {iam.OWNER_KEY: "team-b-dan"}) == "implicit-deny"
