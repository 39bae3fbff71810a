"""The AWX survey specs in docs/awx/ against what the playbooks and roles accept.

A survey question for a role variable must match the role's
meta/argument_specs.yml: the variable exists, the survey type fits the spec
type, multiple choices are the spec's choices (or true/false for a bool), and
a default is the spec's default. A question for a playbook variable (the
hosts, the batch size, the window ...) must name a variable the playbook
reads, with the default the playbook uses.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SURVEYS = {
    # survey file: (playbook, roles whose argument specs the variables come from)
    "migrate.survey.json": ("migrate.yml", ["migrate"]),
    "maintenance.survey.json": ("maintenance.yml", ["checkpoint", "restore"]),
}
AWX_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# Which survey types can carry a value of each argument-spec type (all arrive as strings
# or numbers from AWX; the roles cast them).
FITS = {"str": {"text", "textarea", "password", "multiplechoice"}, "path": {"text", "textarea"},
        "raw": {"text", "textarea"}, "list": {"text", "textarea", "multiselect"},
        "int": {"integer"}, "float": {"float", "integer"}, "bool": {"multiplechoice"}}


def _role_options(roles):
    out = {}
    for role in roles:
        spec = yaml.safe_load((REPO / "roles" / role / "meta" / "argument_specs.yml").read_text())
        out.update(spec["argument_specs"]["main"]["options"])
    return out


def _playbook_text(playbook):
    text = (REPO / "playbooks" / playbook).read_text()
    for inc in re.findall(r"include_tasks: (tasks/\S+\.yml)", text):
        text += (REPO / "playbooks" / inc).read_text()
    return text


def _choices(q):
    c = q["choices"]
    return [x for x in (c.split("\n") if isinstance(c, str) else c) if x]


def _load(name):
    return json.loads((REPO / "docs" / "awx" / name).read_text())


@pytest.mark.parametrize("name", sorted(SURVEYS))
def test_survey_is_well_formed(name):
    survey = _load(name)
    assert survey["name"] and survey["spec"]
    seen = set()
    for q in survey["spec"]:
        assert q["type"] in AWX_TYPES, q
        assert q["variable"] not in seen, "asked twice: %s" % q["variable"]
        seen.add(q["variable"])
        assert q["question_name"] and isinstance(q["required"], bool), q
        if q["type"] == "multiplechoice":
            assert q["default"] in _choices(q), q
        if q["type"] in ("integer", "float"):
            assert q["min"] <= q["default"] <= q["max"], q


@pytest.mark.parametrize("name", sorted(SURVEYS))
def test_survey_matches_the_argument_specs(name):
    playbook, roles = SURVEYS[name]
    options = _role_options(roles)
    text = _playbook_text(playbook)
    checked_role = 0
    for q in _load(name)["spec"]:
        var = q["variable"]
        if var in options:
            checked_role += 1
            o = options[var]
            typ = o.get("type", "str")
            assert q["type"] in FITS[typ], "%s: survey type %s for spec type %s" % (var, q["type"], typ)
            if "choices" in o:
                assert sorted(_choices(q)) == sorted(map(str, o["choices"])), var
            if typ == "bool":
                assert sorted(_choices(q)) == ["false", "true"], var
            if q.get("default") not in (None, "") or "default" in o:
                want = o.get("default")
                got = q.get("default")
                if typ == "bool":
                    assert got == str(bool(want)).lower(), (var, got, want)
                elif typ in ("raw", "list") and want == []:
                    assert got == "", (var, got)
                elif typ in ("int", "float"):
                    assert float(got) == float(want), (var, got, want)
                else:
                    assert str(got or "") == str(want or ""), (var, got, want)
        else:
            # A playbook variable: the playbook reads it, and its default is the survey's.
            assert re.search(r"\b%s\b" % re.escape(var), text), "%s is read by neither %s nor roles %s" % (
                var, playbook, roles)
            defaults = re.findall(r"\b%s\s*\|\s*default\(([^)]*)\)" % re.escape(var), text)
            for d in defaults:
                d = d.split(",")[0].strip().strip("'\"")
                if d not in ("", "[]", "none", "true") and q.get("default") not in (None, ""):
                    assert str(q["default"]).lower() == d.lower(), (var, q["default"], d)
    assert checked_role >= 3, "the survey asks hardly anything of the roles"


def test_awx_doc_points_at_the_survey_files():
    text = (REPO / "docs" / "awx.md").read_text()
    for name in SURVEYS:
        assert "docs/awx/%s" % name in text, name
