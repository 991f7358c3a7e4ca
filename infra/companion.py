"""The companion stack: what `chalice deploy` cannot create, for a stage Chalice deployed.

    python infra/companion.py <stage> > build/<stage>/companion.json     (make companion deploys it)

Chalice deploys the functions, their roles (.chalice/policy-*.json), the REST API and the three schedules.
This stack adds the rest from the same definitions `make package` merges (infra/template.json and the
.asl.json files): the tables, the three state machines and their role, the chat function's streaming URL,
the alarms, their topic and the dashboard. Nothing Chalice deployed is declared twice: no function, no
function role, no schedule. Where the packaged stack refers to a function by its logical id, this one names
the function Chalice made (`hyperstack-llm-proxy-<stage>-<name>`, the API handler's without a suffix), and
the functions find the state machines by their names (WORKFLOW_NAME_PREFIX).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from infra.package import inline_definitions

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = "hyperstack-llm-proxy"
# Chalice's names for the functions of a stage, by the packaged stack's logical ids.
CHALICE_FUNCTIONS = {
    "APIHandler": f"{APP}-${{Stage}}",
    "Chat": f"{APP}-${{Stage}}-chat",
    "Provision": f"{APP}-${{Stage}}-provision",
    "Reconcile": f"{APP}-${{Stage}}-reconcile",
    "IdleCheck": f"{APP}-${{Stage}}-idle_check",
    "Scale": f"{APP}-${{Stage}}-scale",
}
FUNCTION_ARN = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
# Resources of the packaged stack that only make sense there: the REST API's streaming integration of chat
# (Chalice's API serves chat buffered, on its own handler).
PACKAGED_ONLY = re.compile(r"^ChatApiInvoke")


def _named(value: Any) -> Any:
    """`value` with every reference to a Chalice function replaced by the function's name or ARN."""
    if isinstance(value, list):
        return [_named(item) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"} and value["Ref"] in CHALICE_FUNCTIONS:
        return {"Fn::Sub": CHALICE_FUNCTIONS[value["Ref"]]}
    if set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][0] in CHALICE_FUNCTIONS:
        if value["Fn::GetAtt"][1] != "Arn":  # Chalice's functions are known by name and ARN, nothing else
            raise ValueError(f"the companion cannot refer to {value}: only a function's Arn")
        return {"Fn::Sub": FUNCTION_ARN + CHALICE_FUNCTIONS[value["Fn::GetAtt"][0]]}
    if set(value) == {"Fn::Sub"}:
        body = value["Fn::Sub"]
        text, variables = (body[0], body[1:]) if isinstance(body, list) else (body, None)
        for logical_id, name in CHALICE_FUNCTIONS.items():
            text = text.replace(f"${{{logical_id}.Arn}}", FUNCTION_ARN + name).replace(f"${{{logical_id}}}", name)
        return {"Fn::Sub": [text, *_named(variables)] if variables is not None else text}
    return {key: _named(inner) for key, inner in value.items()}


def _referenced(value: Any) -> set[str]:
    text = json.dumps(value)
    return set(re.findall(r'"Ref": "([^"]+)"', text)) | set(re.findall(r"\$\{([A-Za-z0-9]+)[}.]", text)) | set(
        re.findall(r'"Condition": "([^"]+)"', text)) | set(re.findall(r'"Fn::GetAtt": \["([^"]+)"', text))


def companion_template(stage: str) -> dict[str, Any]:
    merged = json.loads((REPO_ROOT / "infra" / "template.json").read_text())
    resources = {name: _named(resource) for name, resource in merged["Resources"].items()
                 if "Type" in resource and not PACKAGED_ONLY.match(name)}  # typeless entries amend Chalice's
    template: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{APP}: what `chalice deploy` cannot create, beside the functions it deployed",
        "Resources": resources,
    }
    inline_definitions(template)
    used = _referenced(resources)
    template["Parameters"] = {name: parameter for name, parameter in merged.get("Parameters", {}).items()
                              if name in used}
    template["Parameters"]["Stage"]["AllowedValues"] = [stage]
    conditions = {name: condition for name, condition in merged.get("Conditions", {}).items() if name in used}
    if conditions:
        template["Conditions"] = conditions
    template["Outputs"] = {name: _named(output) for name, output in merged.get("Outputs", {}).items()
                           if _referenced(output) - {"Stage"} <= set(resources) | set(template["Parameters"])
                           | {f"AWS::{pseudo}" for pseudo in ("Region", "AccountId", "Partition", "URLSuffix")}}
    return template


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(companion_template(argv[0]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
