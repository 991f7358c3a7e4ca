"""Inline the state machine definitions into the template `chalice package` wrote.

    python infra/package.py build/<stage>/sam.json

Chalice merges one static JSON template, so infra/template.json declares each
AWS::StepFunctions::StateMachine without a Definition and names its file in `Metadata.DefinitionFile`
(a path from the repository root). This script puts that file's JSON in as `Definition`: the .asl.json
stays the single source of what the stack deploys, what moto runs locally and what the tests check.
Standard library only: `make package` runs it with any Python.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_MACHINE = "AWS::StepFunctions::StateMachine"
DEFINITION_FILE = "DefinitionFile"
# ${Name} in a definition: CloudFormation replaces it from DefinitionSubstitutions.
SUBSTITUTION = re.compile(r"\$\{([^}]+)\}")


def inline_definitions(template: dict[str, Any]) -> list[str]:
    """Set `Definition` on every state machine that names a DefinitionFile; returns their logical ids."""
    inlined = []
    for name, resource in template.get("Resources", {}).items():
        source = resource.get("Metadata", {}).get(DEFINITION_FILE)
        if resource.get("Type") != STATE_MACHINE or source is None:
            continue
        text = (REPO_ROOT / source).read_text()
        properties = resource.setdefault("Properties", {})
        unknown = set(SUBSTITUTION.findall(text)) - set(properties.get("DefinitionSubstitutions", {}))
        if unknown:
            raise ValueError(f"{name}: {source} uses {sorted(unknown)}, which DefinitionSubstitutions lacks")
        if {"DefinitionString", "DefinitionS3Location"} & set(properties):
            raise ValueError(f"{name}: declares a definition besides {source}")
        properties["Definition"] = json.loads(text)
        inlined.append(name)
    return inlined


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = Path(argv[1])
    template = json.loads(path.read_text())
    inlined = inline_definitions(template)
    if not inlined:
        print(f"{path}: no {STATE_MACHINE} names a Metadata.{DEFINITION_FILE}", file=sys.stderr)
        return 1
    path.write_text(json.dumps(template, indent=2) + "\n")
    print(f"{path}: inlined the definition of {', '.join(inlined)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
