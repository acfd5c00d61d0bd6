"""template.toml validation and `scientist templates`: one clear line naming the file and the field."""

import re

import pytest
from conftest import scientist, write_tiny_template

from base.template import TemplateError, load_template


def break_toml(tmp_path, pattern: str, replacement: str):
    root = write_tiny_template(tmp_path)
    path = root / "template.toml"
    text, n = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.M)
    assert n == 1
    path.write_text(text)
    return root


def test_shipped_template_loads():
    t = load_template("discopop")
    assert t.spec.metric.direction == "max" and t.spec.editable == ["loss.py"]
    assert len(t.content_hash()) == 16


@pytest.mark.parametrize("pattern,replacement,message", [
    (r"^name = .*$", "", "field 'name': missing"),
    (r"^seeds = .*$", 'seeds = "eight"', "field 'seeds': Input should be a valid integer"),
    (r'^direction = .*$', 'direction = "up"', "field 'metric.direction': Input should be 'max' or 'min'"),
    (r"^time_s = .*$", "time_s = -1", "field 'limits.time_s': Input should be greater than 0"),
    (r'^editable = .*$', 'editable = ["nope.py"]', "file 'nope.py' named in the template does not exist"),
    (r'^entrypoint = .*$', 'entrypoint = "loss.py"', "field 'entrypoint'"),
    (r'^editable = .*$', 'editable = ["../x.py"]', "must be a path inside the template folder"),
    (r"^\[metric\]$", "[metric", "not valid TOML"),
])
def test_malformed_template_gives_one_line(tmp_path, pattern, replacement, message):
    root = break_toml(tmp_path, pattern, replacement)
    with pytest.raises(TemplateError) as e:
        load_template(str(root))
    text = str(e.value)
    assert message in text and str(root / "template.toml") in text and "\n" not in text


def test_unknown_template_via_cli(tmp_path):
    r = scientist("eval", "--template", "nonesuch", "--home", str(tmp_path))
    assert r.code == 2
    known = r.err.split("(known: ")[1].split(")")[0].split(", ")
    assert "unknown template 'nonesuch' (known: " in r.err and "discopop" in known
    assert "Traceback" not in r.text and len(r.err.strip().splitlines()) == 1


def test_templates_command_lists_metric_and_flags_broken_one(tmp_path):
    break_toml(tmp_path, r"^seeds = .*$", "")
    ok = scientist("templates", "--home", str(tmp_path / "h"))
    assert ok.code == 0 and "discopop" in ok.out and "reward_gain_at_kl" in ok.out and "not computed" in ok.out
    bad = scientist("templates", "--home", str(tmp_path / "h"), "--templates-dir", str(tmp_path))
    assert bad.code == 2 and "field 'seeds': missing" in bad.err and "Traceback" not in bad.text


def test_content_hash_covers_what_computes_results_and_nothing_else(tmp_path):
    from conftest import copy_template

    root = copy_template(tmp_path, "discopop", {})
    t = load_template(str(root))
    before = t.content_hash()
    assert {"loss.py", "harness.py", "evaluate.py", "jax_workloads/preference.py",
            "jax_workloads/sealed.py"} <= set(t.computing_files())
    assert "jax_workloads/ppo.py" not in t.computing_files()  # not imported by this template
    # Papers-only and proposer-only files: edited freely, nothing recomputed.
    for rel in ("latex/references.bib", "latex/setup.tex", "README.md", "prompt.md", "figures.py",
                "search_space.py", "seed_ideas.json"):
        path = root / rel
        path.write_text(path.read_text() + "\n% edited\n" if rel.endswith((".bib", ".tex")) else
                        path.read_text() + ("\n# edited\n" if rel.endswith(".py") else "\n"))
    toml = root / "template.toml"
    toml.write_text(toml.read_text().replace('description = "', 'description = "Edited: ', 1))
    assert load_template(str(root)).content_hash() == before
    # What computes results: the harness, the config.
    (root / "harness.py").write_text((root / "harness.py").read_text() + "\n# edited\n")
    after_harness = load_template(str(root)).content_hash()
    assert after_harness != before
    toml.write_text(re.sub(r"(?m)^steps = (\d+)", lambda m: f"steps = {int(m.group(1)) + 1}", toml.read_text()))
    assert load_template(str(root)).content_hash() != after_harness
