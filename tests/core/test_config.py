"""Config: YAML + overrides, every error reported at once with the key, the value and a suggestion."""

import pytest

from dermdiff_lora.core import config
from dermdiff_lora.core.errors import ConfigError


def test_typo_gets_suggestion():
    with pytest.raises(ConfigError) as err:
        config.load(None, ["train.max_step=3"])
    assert "train.max_step" in str(err.value) and "did you mean 'train.max_steps'" in str(err.value)


def test_unknown_section_and_choice_suggestions():
    with pytest.raises(ConfigError) as err:
        config.load(None, ["trian.mode=lora", "train.mode=lorra"])
    msg = str(err.value)
    assert "'trian'" in msg and "did you mean 'train'" in msg
    assert "train.mode: 'lorra'" in msg and "did you mean 'lora'" in msg


def test_several_errors_at_once():
    with pytest.raises(ConfigError) as err:
        config.load(None, ["train.batch_size=abc", "optim.lr=5", "lora.rank=0", "data.resolutoin=64"])
    msg = str(err.value)
    assert msg.startswith("4 config error(s)")
    assert "train.batch_size: expected an integer, got 'abc'" in msg
    assert "optim.lr: 5.0 is out of range" in msg
    assert "lora.rank: 0 is out of range" in msg
    assert "did you mean 'data.resolution'" in msg


def test_overrides_parse_yaml_values():
    cfg = config.load(None, ["optim.lr=1e-4", "lora.target_modules=[to_q, to_v]", "train.resume=latest",
                             "model.revision=null", "data.balance_cap=3"])
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.lora.target_modules == ["to_q", "to_v"]
    assert cfg.train.resume == "latest" and cfg.model.revision is None
    assert cfg.data.balance_cap == 3.0


def test_yaml_booleans_become_the_choice_words_they_were(tmp_path):
    """YAML 1.1 reads no/off as false: `train.mixed_precision=no` must still mean "no", in a file too."""
    cfg = config.load(None, ["train.mixed_precision=no", "speed.cache_latents=off"])
    assert (cfg.train.mixed_precision, cfg.speed.cache_latents) == ("no", "off")
    (tmp_path / "c.yaml").write_text("train:\n  mixed_precision: no\nspeed:\n  cache_latents: on\n")
    cfg = config.load(str(tmp_path / "c.yaml"))
    assert (cfg.train.mixed_precision, cfg.speed.cache_latents) == ("no", "on")
    with pytest.raises(ConfigError, match="train.mode: expected a string, got True"):
        config.load(None, ["train.mode=yes"])  # no choice word for true: still an error naming the key


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="not key=value"):
        config.load(None, ["train.max_steps"])


def test_missing_config_file_lists_packaged():
    with pytest.raises(ConfigError, match="not found.*demo"):
        config.load("nope.yaml")


def test_cross_field_check():
    with pytest.raises(ConfigError, match="lora.text_encoder=true needs train.mode=lora"):
        config.load(None, ["train.mode=full", "lora.text_encoder=true"])


def test_save_and_reload_roundtrip(tmp_path):
    cfg = config.load("demo", ["train.max_steps=7", "prompts.value_maps.skin_tone.0=fair"])
    config.save(cfg, tmp_path)
    again = config.load_saved(tmp_path)
    assert again == cfg and again.prompts.value_maps["skin_tone"]["0"] == "fair"


def test_paper_recipe_is_exact():
    cfg = config.load("dermdiff_full")
    t, o, d = cfg.train, cfg.optim, cfg.data
    assert cfg.model.base == "CompVis/stable-diffusion-v1-4"
    assert (t.mode, t.ema, t.mixed_precision, t.batch_size, t.gradient_accumulation) == ("full", True, "fp16", 1, 4)
    assert (t.gradient_checkpointing, t.max_steps, t.max_grad_norm) == (True, 15000, 1.0)
    assert (o.lr, o.scheduler, o.warmup_steps) == (1e-5, "constant", 0)
    assert (d.resolution, d.center_crop, d.random_flip) == (512, True, True)


@pytest.mark.parametrize("name", ["demo", "lora_24gb", "full_24gb"])
def test_packaged_configs_load(name):
    cfg = config.load(name)
    if name != "demo":
        assert cfg.optim.name == "adamw8bit"
