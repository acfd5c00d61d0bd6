"""template.toml validation and `scientist templates`: one clear line naming the file and the field."""

import hashlib
import json
import re

import pytest
from conftest import scientist, write_tiny_template

from base.template import TemplateError, default_profile, load_template


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
    (r"^tracer = .*$", "", "field 'tracer': missing"),
    (r"^seeds = .*$", 'seeds = "eight"', "field 'seeds': Input should be a valid integer"),
    (r'^direction = .*$', 'direction = "up"', "field 'metric.direction': Input should be 'max' or 'min'"),
    (r"^time_s = .*$", "time_s = -1", "field 'limits.time_s': Input should be greater than 0"),
    (r'^editable = .*$', 'editable = ["nope.py"]', "file 'nope.py' named in the template does not exist"),
    (r'^entrypoint = .*$', 'entrypoint = "loss.py"', "field 'entrypoint'"),
    (r'^editable = .*$', 'editable = ["../x.py"]', "must be a path inside the template folder"),
    (r"^\[metric\]$", "[metric", "not valid TOML"),
    (r"^cpus = .*$", "cpus = 1.5", "field 'resources.cpus': 1.5 is neither a share below 1 nor a whole number"),
    (r"^cpus = .*$", "memory_mb = 1000", "field 'resources': memory_mb (1000) is below limits.memory_mb (1500)"),
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


# ---------------------------------------------------------------- profiles: cpu and gpu settings in template.toml

SHIPPED = ["discopop", "open", "kinetix", "diffusion", "transformer", "navix", "hades", "synthenv"]
# Digests of each template's effective CPU settings (seeds, limits, config, private) when profiles came in, which
# every measured result in the READMEs and the `make demo` table used: the cpu profile must keep giving them.
# kinetix's [config.budgets.cpu] moved into [config.ppo] then (the same PPOConfig: tests/test_kinetix.py).
# kinetix's changed on 2026-12-03 to Kinetix's own PPO (tests/test_kinetix_fidelity.py), re-measured then.
# open's changed on 2026-12-03 to OPEN's wiring ([config.open], tests/test_open_fidelity.py), re-measured then,
# and on 2026-12-07 only in the label of its Adam reference (its fingerprint no longer covers the eval seed).
CPU_SETTINGS = {"discopop": "449aa8910b5c", "open": "5f56a07bd07f", "kinetix": "c0575a95c8c4",
                "diffusion": "db010fbc7f5b", "transformer": "e9dec21fe124",
                "navix": "1769d15e3b1e",  # navix: added 2026-12-07, measured then (templates/navix/README.md)
                "hades": "3796c03e9f85",  # hades: added 2026-12-07, measured then (templates/hades/README.md)
                "synthenv": "eff6b853c751"}  # synthenv: added 2026-12-07, measured then (templates/synthenv/README.md)
SETTINGS = {"seeds", "limits", "config", "private"}


def settings_digest(spec) -> str:
    # The tracer's time limit (added 2026-12-07) changes no result of a run that traced: not part of the fingerprint.
    blob = json.dumps(spec.model_dump(mode="json", include=SETTINGS, exclude={"limits": {"trace_time_s"}}),
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def add_profile(tmp_path, lines: str):
    """The tiny DiscoPOP with `lines` appended to its [profiles] table (the last table of the file)."""
    root = write_tiny_template(tmp_path)
    toml = root / "template.toml"
    assert toml.read_text().rstrip().splitlines()[-1].startswith("gpu.")  # [profiles] is still the last table
    toml.write_text(toml.read_text() + lines + "\n")
    return root


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_cpu_profile_is_todays_settings_and_gpu_profile_differs(name):
    t = load_template(name)
    cpu, gpu = t.with_profile("cpu"), t.with_profile("gpu")
    assert set(t.spec.profiles) == {"cpu", "gpu"} and (cpu.spec.profile, gpu.spec.profile) == ("cpu", "gpu")
    assert settings_digest(cpu.spec) == CPU_SETTINGS[name], f"{name}'s CPU settings changed: so have its results"
    assert cpu.spec.model_dump(include=SETTINGS | {"resources"}) == t.spec.model_dump(include=SETTINGS | {"resources"})
    assert cpu.content_hash() == t.content_hash()  # the runs stored before profiles are reused
    assert cpu.spec.resources.gpus == 0 and gpu.spec.resources.gpus == 1
    assert gpu.content_hash() != cpu.content_hash()  # a GPU run never reuses a CPU run, nor the other way
    assert gpu.spec.resources.memory_mb == gpu.spec.limits.memory_mb >= cpu.spec.limits.memory_mb


def test_profile_overlays_seeds_limits_config_private_and_resources(tmp_path):
    root = add_profile(tmp_path, 'big.seeds = 3\n'
                                 'big.limits = { time_s = 50, memory_mb = 2000 }\n'
                                 'big.resources = { cpus = 4, gpus = 0.5 }\n'
                                 'big.config.betas = [0.5]\n'
                                 'big.config.train = { steps = 7, learning_rate = 1 }\n'
                                 'big.private.eval_seed = 9')
    base = load_template(str(root))
    big = base.with_profile("big")
    s, b = big.spec, base.spec
    assert (s.profile, s.seeds, s.limits.time_s, s.limits.memory_mb) == ("big", 3, 50, 2000)
    assert s.limits.disk_mb == b.limits.disk_mb and s.limits.eval_time_s == b.limits.eval_time_s
    # memory_mb follows the profile's limits, as it follows the base's: what a run may use is reserved.
    assert (s.resources.cpus, s.resources.gpus, s.resources.memory_mb) == (4, 0.5, 2000)
    assert b.resources.memory_mb == b.limits.memory_mb == 1500 and b.resources.cpus == 2
    # Tables merge key by key; lists and other values are replaced; the base spec is unchanged.
    assert s.config["train"] == {**b.config["train"], "steps": 7, "learning_rate": 1}
    assert s.config["betas"] == [0.5] and s.config["world"] == b.config["world"]
    assert s.private == {**b.private, "eval_seed": 9}
    assert b.profile is None and b.config["train"]["steps"] == 40 and b.seeds == 2
    assert big.with_profile("big") is big
    with pytest.raises(TemplateError, match="already carries profile 'big'; load it again to apply 'gpu'"):
        big.with_profile("gpu")
    # Config, limits and whether a GPU computes are in the content hash; the seeds are in the run key instead.
    assert big.content_hash() != base.content_hash()
    root = add_profile(tmp_path / "b", "same = {}\n"
                                       "same_on_gpu.resources = { gpus = 1 }\n"
                                       "more_cpus.resources = { cpus = 8 }\n"
                                       "smoke.compile = { optimize = false }\n"
                                       "optimized.compile = { optimize = true }")
    t = load_template(str(root))
    assert t.with_profile("same").content_hash() == t.with_profile("more_cpus").content_hash() == t.content_hash()
    assert t.with_profile("same_on_gpu").content_hash() != t.content_hash()
    # Compiling without XLA's optimisations (as this tiny copy does, conftest.copy_template) computes other
    # floating-point results: never the optimised runs. The default, written or not, leaves the hash as it was
    # before [compile] existed.
    optimized = t.with_profile("optimized")
    assert not t.spec.compile.optimize and optimized.spec.compile.optimize
    assert t.with_profile("smoke").content_hash() == t.content_hash() != optimized.content_hash()
    toml = root / "template.toml"
    toml.write_text(toml.read_text().replace("[compile]\noptimize = false\n", ""))
    assert load_template(str(root)).content_hash() == optimized.content_hash()


@pytest.mark.parametrize("lines,message", [
    ("big.config.train = { stepz = 7 }",
     "field 'profiles.big.config.train.stepz': [config.train] has no 'stepz': a profile changes settings, "
     "it adds none"),
    ("big.config.nope = 1", "field 'profiles.big.config.nope': [config] has no 'nope'"),
    ("big.private.eval_sed = 1", "field 'profiles.big.private.eval_sed': [private] has no 'eval_sed'"),
    ("big.config.train = 5", "field 'profiles.big.config.train': [config.train] is a table"),
    ("big.config.kl_budget = { x = 1 }", "field 'profiles.big.config.kl_budget': a table where the base setting"),
    ('big.config.train = { steps = "many" }',
     "field 'profiles.big.config.train.steps': type str, but the base setting's is int"),
    ("big.limitz = { time_s = 5 }", "field 'profiles.big.limitz': Extra inputs are not permitted"),
    ("big.limits = { time_z = 5 }", "field 'profiles.big.limits.time_z'"),
    ("big.limits = { time_s = -1 }", "field 'profiles.big.limits.time_s': Input should be greater than 0"),
    ("big.seeds = 0", "field 'profiles.big.seeds': Input should be greater than 0"),
    ("big.resources = { gpus = 1.5 }",
     "field 'profiles.big.resources.gpus': 1.5 is neither a share below 1 nor a whole number"),
    ("big.resources = { memory_mb = 100 }",
     "field 'profiles.big.resources': memory_mb (100) is below limits.memory_mb (1500)"),
    ("big.resources = { tpus = 1 }", "field 'profiles.big.resources.tpus': Extra inputs are not permitted"),
    ("big.compile = { optimise = false }", "field 'profiles.big.compile.optimise': Extra inputs are not permitted"),
    ('big.compile = { optimize = "maybe" }',
     "field 'profiles.big.compile.optimize': Input should be a valid boolean"),
])
def test_bad_profile_is_refused_in_one_line_when_the_template_loads(tmp_path, lines, message):
    root = add_profile(tmp_path, lines)
    with pytest.raises(TemplateError) as e:
        load_template(str(root))
    text = str(e.value)
    assert message in text and "template.toml" in text and "\n" not in text


def test_unknown_profile_is_one_line_and_a_toml_cannot_claim_one(tmp_path):
    t = load_template(str(write_tiny_template(tmp_path)))
    with pytest.raises(TemplateError) as e:
        t.with_profile("tpu")
    assert "template.toml: unknown profile 'tpu' (known: cpu, gpu)" in str(e.value) and "\n" not in str(e.value)
    root = break_toml(tmp_path / "b", r"^seeds = .*$", 'seeds = 2\nprofile = "gpu"')
    with pytest.raises(TemplateError, match="field 'profile': is set by applying a profile"):
        load_template(str(root))


def test_template_without_profiles_works_as_before(tmp_path):
    root = write_tiny_template(tmp_path)
    toml = root / "template.toml"
    toml.write_text(re.sub(r"(?ms)^\[resources\]\n.*?\n\n", "", toml.read_text().split("\n[profiles]\n")[0]))
    t = load_template(str(root))
    assert t.spec.profiles == {} and t.spec.resources.model_dump() == {"cpus": 1, "gpus": 0, "memory_mb": 1500}
    cpu = t.with_profile("cpu")  # a template's own settings are its CPU size
    assert cpu.spec.profile == "cpu" and cpu.content_hash() == t.content_hash()
    with pytest.raises(TemplateError, match="unknown profile 'gpu' \\(known: cpu\\)"):
        t.with_profile("gpu")


def test_default_profile_follows_the_gpus_given():
    assert default_profile(None) == default_profile("") == "cpu"
    assert default_profile("all") == default_profile("0,1") == "gpu"


def test_the_profile_follows_the_gpus_given_and_the_device_is_in_the_run_key():
    t = load_template("discopop")
    on_cpu, on_gpu = t.for_hardware(None, None), t.for_hardware(None, "0")
    assert (on_cpu.spec.profile, on_cpu.device) == ("cpu", "cpu") and on_cpu.content_hash() == t.content_hash()
    assert (on_gpu.spec.profile, on_gpu.device) == ("gpu", "gpu")
    # The CPU-sized settings computed on a GPU: other floating-point results, so another key.
    small_on_gpu = t.for_hardware("cpu", "all")
    assert small_on_gpu.spec.config == on_cpu.spec.config and small_on_gpu.content_hash() != on_cpu.content_hash()


def test_profile_flag_runs_the_profiles_settings_and_an_unknown_one_is_one_line(tmp_path):
    root = add_profile(tmp_path, "three.seeds = 3")
    home = tmp_path / "home"
    r = scientist("baseline", "--template", str(root), "--home", str(home), "--sandbox", "process",
                  "--profile", "three")
    assert r.code == 0, r.text
    (info,) = [json.loads(p.read_text()) for p in (home / "runs").rglob("final_info.json")]
    assert info["metrics"]["reward_gain_at_kl"]["n"] == 3  # the profile's seeds, not the template's 2
    # Without a baseline for its settings, eval names the command that makes one: the profile and seeds it used.
    ipo = tmp_path / "ipo.py"
    ipo.write_text("def loss(pc, pr, rc, rr, beta):\n    return ((pc - pr) - (rc - rr) - 1 / (2 * beta)) ** 2\n")
    fewer = scientist("eval", "--template", str(root), "--home", str(home), "--sandbox", "process", "--profile",
                      "three", "--seeds", "2", "--candidate", str(ipo))
    assert fewer.code == 0, fewer.text
    assert "run `scientist baseline --template discopop --profile three --seeds 2`" in fewer.out, fewer.out
    bad = scientist("eval", "--template", str(root), "--home", str(home), "--sandbox", "process", "--profile", "tpu")
    assert bad.code == 2 and "unknown profile 'tpu' (known: cpu, gpu, three)" in bad.err
    assert "Traceback" not in bad.text and len(bad.err.strip().splitlines()) == 1
