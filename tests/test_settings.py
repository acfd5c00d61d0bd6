"""One settings model: every setting is a `scientist run` flag and a campaign key, and a night runs with it."""

from __future__ import annotations

import tomllib

import typer

from base.template import load_template
from sandbox.backends import Sandbox
from scientist import campaign as cp
from scientist.cli import _settings, app
from scientist.config import Limits, RunConfig, Settings

# A value other than the default for every setting: a setting added to Settings without one fails the first test.
CHOSEN = {
    "proposer": "llm", "model": "openai/x", "api_base": "http://127.0.0.1:9", "ideas": 7, "runs": 6, "attempts": 2,
    "reflections": 1, "seeds": 4, "test": "paired", "seed": 5, "retries": 2, "literature": "openalex",
    "literature_url": "http://127.0.0.1:8", "writeup": False, "writer": "llm", "review": False, "review_ensemble": 2,
    "review_reflections": 1, "review_protocol": "ensemble", "structured": "off", "max_tokens": 99, "workers": 3,
    "executor": "ray", "ray_address": "127.0.0.1:6379", "sandbox": "bwrap", "image": "img:1", "gpus": "0",
    "profile": "cpu", "cascade": True, "budget": {"usd": 1.5, "minutes": 2.0, "evaluations": 3},
}


def _toml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else f'"{value}"' if isinstance(value, str) else str(value)


def _flags(chosen: dict) -> list[str]:
    args = []
    for name, value in chosen.items():
        if name == "budget":
            args += [a for k, v in value.items() for a in (f"--budget-{k}", str(v))]
        elif isinstance(value, bool):
            args.append(f"--{'' if value else 'no-'}{name.replace('_', '-')}")
        else:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def test_every_setting_is_a_run_flag_and_a_campaign_key_with_the_same_meaning(tmp_path):
    assert set(CHOSEN) == set(Settings.model_fields) and set(CHOSEN["budget"]) == set(Limits.model_fields)
    assert all(Settings.model_fields[k].default != v for k, v in CHOSEN.items() if k != "budget")
    run = typer.main.get_command(app).commands["run"]
    ctx = run.make_context("run", ["--template", "discopop", *_flags(CHOSEN)])
    from_flags = _settings({k: v for k, v in ctx.params.items() if k in Settings.model_fields or
                            k.startswith("budget_")})
    path = tmp_path / "c.toml"
    lines = [f"{k} = {_toml(v)}" for k, v in CHOSEN.items() if k != "budget"]
    path.write_text('name = "c"\ntemplate = "discopop"\n' + "\n".join(lines) + "\n[budget]\n"
                    + "\n".join(f"{k} = {v}" for k, v in CHOSEN["budget"].items()) + "\n")
    assert tomllib.loads(path.read_text())["budget"] == CHOSEN["budget"]
    campaign = cp.load_campaign(path)
    assert from_flags == Settings.model_validate(CHOSEN)
    assert campaign.model_dump(include=set(Settings.model_fields)) == from_flags.model_dump()


def test_a_night_runs_with_its_campaign_settings(tmp_path):
    campaign = cp.CampaignConfig.model_validate({"name": "c", "template": "discopop", **CHOSEN})
    template = load_template("discopop")
    night = cp.Night(2, tmp_path / "002-2026-12-07", resumed=False)
    cfg = cp.night_config(campaign, template, Sandbox("bwrap", gpus="0"), tmp_path, night)
    assert isinstance(cfg, RunConfig) and cfg.campaign == "c" and cfg.out_dir == night.out_dir
    assert cfg.seed == CHOSEN["seed"] + 2  # the evolve proposer draws other genomes each night
    same = {k: getattr(cfg, k) for k in Settings.model_fields if k not in ("seed", "sandbox", "budget")}
    assert same == {k: v for k, v in CHOSEN.items() if k not in ("seed", "sandbox", "budget")}
    assert cfg.budget == Limits(**CHOSEN["budget"]) and cfg.sandbox.backend == "bwrap"
    # Left out, seeds and workers are resolved: the template's seeds, one worker per GPU given.
    bare = cp.CampaignConfig(name="c", template="discopop")
    cfg = cp.night_config(bare, template, Sandbox("bwrap"), tmp_path, night)
    assert cfg.seeds == template.spec.seeds and cfg.workers == 1 and cfg.runs == 3 and cfg.proposer == "evolve"


def test_run_and_campaign_take_their_defaults_from_the_one_model():
    run = typer.main.get_command(app).commands["run"]
    defaults = {p.name: p.default for p in run.params}
    for name, field in Settings.model_fields.items():
        if name != "budget":
            assert defaults[name] == field.default, name
    # The campaign file adds its own keys only; of the settings it changes one default (a night runs unattended).
    own = set(cp.CampaignConfig.model_fields) - set(Settings.model_fields)
    assert own == {"name", "template", "templates_dir", "confirm_seeds", "confirm_top", "digest"}
    changed = {k for k in Settings.model_fields if cp.CampaignConfig.model_fields[k].default != field_default(k)}
    assert changed == {"runs"}


def field_default(name: str) -> object:
    return Settings.model_fields[name].default
