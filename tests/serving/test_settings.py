"""The service's one Settings: options over environment over files over defaults, every bad
value refused with its name before anything starts, and what the app builds from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from serving.app import build_services
from serving.db import make_engine
from serving.settings import Settings, SettingsError, load_settings
from serving.web.session import make_signer


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'settings.db'}")


def test_an_option_beats_the_environment_which_beats_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOUCHSTONE_MAX_BATCH", raising=False)
    assert load_settings().max_batch == 16
    monkeypatch.setenv("TOUCHSTONE_MAX_BATCH", "7")
    assert load_settings().max_batch == 7
    assert load_settings(max_batch=3).max_batch == 3
    assert load_settings(max_batch=None).max_batch == 7  # an option left out


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_bach": 3}, "max_bach: unknown key (did you mean 'max_batch'?)"),
        ({"max_batch": 0}, "max_batch"),
        ({"web_secret": "too short"}, "web_secret"),
        ({"photo_key": "not base64!"}, "TOUCHSTONE_PHOTO_KEY is not valid base64"),
        ({"policy": Path("absent.yaml")}, "absent.yaml: cannot read it"),
    ],
)
def test_bad_settings_are_refused_by_name(options: dict, named: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(**options)
    assert named in str(refused.value)


def test_a_misspelt_key_in_a_named_file_stops_the_start(tmp_path: Path) -> None:
    benefits = tmp_path / "benefits.yaml"
    benefits.write_text("points_per_apraisal: 900\n")
    with pytest.raises(SettingsError, match="did you mean 'points_per_appraisal'"):
        load_settings(benefits=benefits)
    benefits.write_text("points_per_appraisal: 900\n")
    assert load_settings(benefits=benefits).benefits_config.points_per_appraisal == 900


def test_files_default_to_the_working_directorys_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings().policy_config.high_value_cny == 50_000  # none there: built-in defaults
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "policy.yaml").write_text("high_value_cny: 80000\n")
    assert Settings().policy_config.high_value_cny == 80_000


def test_webhook_secrets_can_live_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = tmp_path / "webhooks.yaml"
    hooks.write_text("webhooks:\n  - url: https://members.example/in\n    secret_env: HOOK_KEY\n")
    monkeypatch.delenv("TOUCHSTONE_WEBHOOKS", raising=False)
    monkeypatch.delenv("HOOK_KEY", raising=False)
    with pytest.raises(SettingsError, match="HOOK_KEY is not set"):
        load_settings(webhooks_file=hooks)
    monkeypatch.setenv("HOOK_KEY", "s3cret")
    (hook,) = load_settings(webhooks_file=hooks).outbox_config.webhooks
    assert hook.secret is not None and hook.secret.get_secret_value() == "s3cret"


def test_the_web_secret_setting_signs_the_reviewers_cookies(tmp_path: Path, engine: Engine) -> None:
    """Servers behind one balancer share TOUCHSTONE_WEB_SECRET: a cookie one signs, another
    reads; without it, each data directory makes its own."""
    secret = "s" * 40
    shared = build_services(Settings(data_dir=tmp_path / "a", web_secret=secret), engine)
    cookie = make_signer(secret.encode()).dumps({"k": 1, "c": "token"})
    assert shared.signer.loads(cookie) == {"k": 1, "c": "token"}
    assert not (tmp_path / "a" / "web-secret").exists()
    own = build_services(Settings(data_dir=tmp_path / "b"), engine)
    assert (tmp_path / "b" / "web-secret").exists()
    with pytest.raises(Exception, match="Signature"):
        own.signer.loads(cookie)
