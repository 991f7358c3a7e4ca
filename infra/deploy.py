"""`make deploy` and `make undeploy`: the packaged stack to AWS and back, each one command.

    python -m infra.deploy deploy build/<stage> --stage <stage> [Name=Value ...]
    python -m infra.deploy undeploy --stage <stage>
    python -m infra.deploy companion --stage <stage> [Name=Value ...]
    python -m infra.deploy uncompanion --stage <stage>

`deploy` takes what `make package` wrote (sam.json and deployment.zip) and:
1. makes or reuses the artifact bucket `hyperstack-llm-proxy-artifacts-<account>-<region>` (private,
   encrypted, owner-enforced), and uploads the zip under its SHA-256, so an unchanged zip is not sent again;
2. translates the SAM template to plain CloudFormation here, with aws-sam-translator, so what AWS deploys
   is exactly what `make test` deployed into moto (tests/infra/test_deploy.py);
3. creates or updates the stack `hyperstack-llm-proxy-<stage>` through a change set (`Stage` set from
   --stage; `Name=Value` arguments pass any other parameter), waits for it, and prints the API URL, the
   chat function URL and the dashboard. A failed deployment prints the events that say why and exits 1.
`undeploy` deletes the stack. The tables are retained (DeletionPolicy) and their names printed.
`companion` deploys, beside a stage that `chalice deploy` made, the stack `hyperstack-llm-proxy-<stage>-companion`
of what Chalice cannot create (infra/companion.py); `uncompanion` deletes it, keeping the tables.
Credentials and region come from the usual AWS settings (AWS_PROFILE, AWS_REGION, ...).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

APP = "hyperstack-llm-proxy"
SERVERLESS_FUNCTION = "AWS::Serverless::Function"
TABLE = "AWS::DynamoDB::Table"
# CloudFormation takes a template body up to this size inline; a larger one is read from S3.
INLINE_TEMPLATE_BYTES = 51_200
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
SHOWN_OUTPUTS = ("EndpointURL", "ChatFunctionUrl", "DashboardUrl", "AlarmTopicArn")


class DeployFailed(Exception):
    """What went wrong, said in full: the command prints it and exits 1."""


def stack_name(stage: str) -> str:
    return f"{APP}-{stage}"


def artifact_bucket(s3: Any, account: str, region: str) -> str:
    """This account's and region's artifact bucket, made private and encrypted if it does not exist."""
    bucket = f"{APP}-artifacts-{account}-{region}"
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
        return bucket
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise DeployFailed(f"the artifact bucket {bucket} exists but is not this account's, or unreadable: "
                               f"{error}") from error
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, ObjectOwnership="BucketOwnerEnforced", **location)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    print(f"made the artifact bucket {bucket}")
    return bucket


def this_accounts_bucket(session: Any) -> str:
    """The artifact bucket of the session's account and region (artifact_bucket)."""
    account = session.client("sts").get_caller_identity()["Account"]
    return artifact_bucket(session.client("s3", region_name=session.region_name), account, session.region_name)


def upload(s3: Any, bucket: str, key: str, body: bytes) -> str:
    """`key` in the bucket holding `body` (sent only if absent: keys are content hashes); its s3:// URI."""
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def with_code(sam: dict[str, Any], code_uri: str) -> dict[str, Any]:
    """The SAM template with every function's code at `code_uri` (chalice package points them at the zip)."""
    for resource in sam["Resources"].values():
        if resource["Type"] == SERVERLESS_FUNCTION:
            resource["Properties"]["CodeUri"] = code_uri
    return sam


def plain_cloudformation(sam: dict[str, Any], region: str) -> dict[str, Any]:
    """The SAM template translated as CloudFormation's transform would, without calling AWS."""
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # The session only tells the translator its region (for ARNs); the template names no managed policy.
    session = boto3.Session(region_name=region, aws_access_key_id="unused", aws_secret_access_key="unused")
    translator = Translator(None, Parser(), boto_session=session)
    return translator.translate(sam_template=sam, parameter_values={}, get_managed_policy_map=dict)


def template_argument(s3: Any, bucket: str, region: str, stage: str, body: str) -> dict[str, str]:
    if len(body.encode()) <= INLINE_TEMPLATE_BYTES:
        return {"TemplateBody": body}
    key = f"{stage}/template-{hashlib.sha256(body.encode()).hexdigest()}.json"
    upload(s3, bucket, key, body.encode())
    return {"TemplateURL": f"https://{bucket}.s3.{region}.amazonaws.com/{key}"}


def stack_status(cfn: Any, stack: str) -> str | None:
    try:
        status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        return None if status == "DELETE_COMPLETE" else status
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise


def table_names(template: dict[str, Any], stage: str) -> list[str]:
    """The names the template gives its tables (a string, or a Fn::Sub of the Stage parameter)."""
    names = []
    for resource in template["Resources"].values():
        name = resource["Properties"].get("TableName") if resource["Type"] == TABLE else None
        if isinstance(name, dict) and isinstance(name.get("Fn::Sub"), str):
            name = name["Fn::Sub"].replace("${Stage}", stage)
        if isinstance(name, str):
            names.append(name)
    return names


def refuse_retained_tables(dynamodb: Any, names: list[str], stack: str) -> None:
    """A new stack cannot create tables an earlier one retained: say so, instead of a rollback minutes later."""
    existing = set(dynamodb.list_tables().get("TableNames", []))  # a stage has 7; one page holds 100
    retained = sorted(set(names) & existing)
    if retained:
        raise DeployFailed(
            f"{stack} does not exist, but its tables do ({', '.join(retained)}): an earlier `make undeploy` "
            "retained them. Delete them (aws dynamodb delete-table --table-name <name>) to start empty; "
            "importing them into a new stack is not automated yet.")


def failure_reasons(cfn: Any, stack: str, since: float) -> list[str]:
    events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    return [f"{event['LogicalResourceId']}: {event['ResourceStatus']}: {event.get('ResourceStatusReason', '')}"
            for event in events
            if event["Timestamp"].timestamp() >= since - 1 and event["ResourceStatus"].endswith("_FAILED")]


def deploy_stack(cfn: Any, stack: str, template: dict[str, str], parameters: dict[str, str]) -> None:
    """Create or update `stack` through a change set, and wait for it."""
    status = stack_status(cfn, stack)
    if status == "ROLLBACK_COMPLETE":  # a first create that failed: it holds nothing, and cannot be updated
        print(f"{stack} is ROLLBACK_COMPLETE from a failed first deployment: deleting it first")
        cfn.delete_stack(StackName=stack)
        cfn.get_waiter("stack_delete_complete").wait(StackName=stack)
        status = None
    change_set = f"deploy-{int(time.time())}"
    started = time.time()
    cfn.create_change_set(
        StackName=stack, ChangeSetName=change_set, ChangeSetType="UPDATE" if status else "CREATE",
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        Capabilities=["CAPABILITY_IAM"], **template)
    try:
        cfn.get_waiter("change_set_create_complete").wait(
            StackName=stack, ChangeSetName=change_set, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    except WaiterError as error:
        reason = cfn.describe_change_set(StackName=stack, ChangeSetName=change_set).get("StatusReason", "")
        if any(phrase in reason for phrase in NO_CHANGES):
            cfn.delete_change_set(StackName=stack, ChangeSetName=change_set)
            print(f"{stack}: no changes to deploy")
            return
        raise DeployFailed(f"the change set for {stack} failed: {reason or error}") from error
    cfn.execute_change_set(StackName=stack, ChangeSetName=change_set)
    waiter = "stack_update_complete" if status else "stack_create_complete"
    try:
        cfn.get_waiter(waiter).wait(StackName=stack, WaiterConfig={"Delay": 10, "MaxAttempts": 360})
    except WaiterError as error:
        reasons = "\n  ".join(failure_reasons(cfn, stack, started)) or str(error)
        raise DeployFailed(f"{stack} did not deploy ({stack_status(cfn, stack)}):\n  {reasons}") from error


def print_outputs(cfn: Any, stack: str) -> dict[str, str]:
    outputs = {output["OutputKey"]: output["OutputValue"]
               for output in cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])}
    print(f"{stack} deployed")
    for key in SHOWN_OUTPUTS:
        if key in outputs:
            print(f"  {key}: {outputs[key]}")
    if "EndpointURL" in outputs:
        print(f"  clients of the original: {outputs['EndpointURL'].rstrip('/')}/v1 (OpenAI base URL)")
    return outputs


def packaged_template(session: Any, package_dir: Path, stage: str) -> tuple[dict[str, Any], str]:
    """The stack's plain CloudFormation, its code uploaded; and the artifact bucket."""
    region = session.region_name
    s3 = session.client("s3", region_name=region)
    bucket = this_accounts_bucket(session)
    code = (package_dir / "deployment.zip").read_bytes()
    code_uri = upload(s3, bucket, f"{stage}/code-{hashlib.sha256(code).hexdigest()}.zip", code)
    sam = with_code(json.loads((package_dir / "sam.json").read_text()), code_uri)
    return plain_cloudformation(sam, region), bucket


def ship(session: Any, bucket: str, stage: str, template: dict[str, Any], overrides: dict[str, str],
         stack: str | None = None) -> dict[str, str]:
    """`template` deployed as the stage's stack (or `stack`); its outputs."""
    region = session.region_name
    cfn = session.client("cloudformation", region_name=region)
    stack = stack or stack_name(stage)
    if stack_status(cfn, stack) in (None, "ROLLBACK_COMPLETE"):
        refuse_retained_tables(session.client("dynamodb", region_name=region), table_names(template, stage), stack)
    body = json.dumps(template, separators=(",", ":"))
    argument = template_argument(session.client("s3", region_name=region), bucket, region, stage, body)
    deploy_stack(cfn, stack, argument, {**overrides, "Stage": stage})
    return print_outputs(cfn, stack)


def aws_session() -> Any:
    session = boto3.Session()
    return session if session.region_name else boto3.Session(region_name="us-east-1")


def deploy(package_dir: Path, stage: str, overrides: dict[str, str]) -> dict[str, str]:
    session = aws_session()
    template, bucket = packaged_template(session, package_dir, stage)
    return ship(session, bucket, stage, template, overrides)


def companion(stage: str, overrides: dict[str, str]) -> dict[str, str]:
    """The companion stack of a Chalice-deployed stage (infra/companion.py)."""
    from infra.companion import companion_template

    session = aws_session()
    return ship(session, this_accounts_bucket(session), stage, companion_template(stage), overrides,
                companion_stack_name(stage))


def companion_stack_name(stage: str) -> str:
    return f"{stack_name(stage)}-companion"


def undeploy(stage: str, stack: str | None = None) -> None:
    session = aws_session()
    cfn = session.client("cloudformation", region_name=session.region_name)
    stack = stack or stack_name(stage)
    if stack_status(cfn, stack) is None:
        print(f"{stack} does not exist: nothing to delete")
        return
    tables = [resource["PhysicalResourceId"] for resource in
              cfn.describe_stack_resources(StackName=stack)["StackResources"] if resource["ResourceType"] == TABLE]
    started = time.time()
    cfn.delete_stack(StackName=stack)
    try:
        cfn.get_waiter("stack_delete_complete").wait(StackName=stack, WaiterConfig={"Delay": 10, "MaxAttempts": 360})
    except WaiterError as error:
        reasons = "\n  ".join(failure_reasons(cfn, stack, started)) or str(error)
        raise DeployFailed(f"{stack} was not deleted:\n  {reasons}") from error
    print(f"{stack} deleted. Retained, with their data: {', '.join(sorted(tables))}")


def parse_overrides(arguments: list[str]) -> dict[str, str]:
    overrides = {}
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if not equals or not name.isalnum():
            raise DeployFailed(f"a parameter is Name=Value (AlarmEmail=oncall@example.com), not {argument!r}")
        if name == "Stage":
            raise DeployFailed("Stage comes from STAGE (make deploy STAGE=prod), not from a parameter")
        overrides[name] = value
    return overrides


def main(argv: list[str]) -> int:
    try:
        if len(argv) >= 4 and argv[0] == "deploy" and argv[2] == "--stage":
            deploy(Path(argv[1]), argv[3], parse_overrides(argv[4:]))
        elif len(argv) == 3 and argv[0] == "undeploy" and argv[1] == "--stage":
            undeploy(argv[2])
        elif len(argv) >= 3 and argv[0] == "companion" and argv[1] == "--stage":
            companion(argv[2], parse_overrides(argv[3:]))
        elif len(argv) == 3 and argv[0] == "uncompanion" and argv[1] == "--stage":
            undeploy(argv[2], companion_stack_name(argv[2]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except DeployFailed as failure:
        print(f"{argv[0]}: {failure}", file=sys.stderr)
        return 1
    except (ClientError, BotoCoreError) as error:
        print(f"{argv[0]}: the AWS call failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
