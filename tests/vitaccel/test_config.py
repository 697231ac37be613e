import dataclasses

import pytest

from vitaccel.config import FEATURES, PRESETS, AccelConfig, ConfigError, load_config, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name):
    cfg = preset(name)
    assert cfg.name == name
    assert cfg.validate() is cfg


def test_default_fits_ecp5_85f():
    cfg = preset("default")
    assert cfg.macs <= 156            # MULT18X18D count of the LFE5U-85F
    assert cfg.onchip_bits <= 3.7e6   # its block RAM


@pytest.mark.parametrize("change, message", [
    ({"rows": 0}, "rows must be between 1 and 64, not 0"),
    ({"rows": 8, "cols": 4}, "rows (8) must equal cols (4)"),
    ({"spad_rows": 1000}, "spad_rows must be a power of two, not 1000"),
    ({"acc_rows": 1 << 17}, "acc_rows=131072 exceeds 65536"),
    ({"bus_bits": 24}, "bus_bits must be a power of two between 8 and 128, not 24"),
    ({"bus_bits": 64, "rows": 12, "cols": 12}, "bus_bits=64 (8 bytes) must divide a scratchpad row of cols=12"),
    ({"requant_lanes": 3}, "requant_lanes=3 must divide cols=4"),
    ({"data_width": 4}, "data_width must be 8"),
    ({"rows": 2.5}, "rows must be an integer, not 2.5"),
    ({"name": "a b"}, "name must be a non-empty string"),
    ({"mult_bits": 12}, "mult_bits must be between 16 and 31, not 12: the quantizer fits the residual adds"),
    ({"mult_bits": 32}, "mult_bits must be between 16 and 31, not 32"),
    ({"requant": "pow2"}, "requant must be one of dyadic, shift, not 'pow2'"),
])
def test_bad_values_are_named(change, message):
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(preset("tiny"), **change).validate()
    assert message in str(info.value)


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = dataclasses.replace(preset("default"), name="mine", acc_rows=512)
    path = tmp_path / f"cfg{suffix}"
    cfg.save(path)
    assert AccelConfig.load(path) == cfg
    assert load_config(str(path)) == cfg
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config 'huge'"):
        load_config("huge")
    with pytest.raises(ConfigError, match="does not exist"):
        AccelConfig.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": 4, "colz": 4}')
    with pytest.raises(ConfigError, match="unknown config field 'colz'"):
        AccelConfig.load(bad)


def test_slug_changes_with_any_field():
    a = preset("tiny")
    assert a.slug != dataclasses.replace(a, acc_rows=512).slug
    assert a.slug == preset("tiny").slug


def test_requant_field_keeps_existing_slugs():
    """requant was added after configs were hashed: at its default it is left out of the file and
    the slug (build directories and caches of every existing config stay), otherwise written."""
    assert preset("tiny").slug == "tiny-5f034ecd5d" and dataclasses.replace(preset("default"), spad_banks=2, vector_lanes=4).slug == "default-6a560a3378"
    assert "requant" not in preset("default").to_dict()
    shift = dataclasses.replace(preset("default"), requant="shift").validate()
    assert shift.to_dict()["requant"] == "shift" and shift.slug != preset("default").slug
    assert AccelConfig.from_dict(shift.to_dict()) == shift
    assert AccelConfig.from_dict(preset("default").to_dict()) == preset("default")


def test_features_follow_requant():
    assert "requant-multiplier" in preset("default").features
    assert dataclasses.replace(preset("default"), requant="shift").features == frozenset()
    assert set(preset("default").features) <= set(FEATURES)
