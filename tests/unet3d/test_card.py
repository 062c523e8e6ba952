import pytest
import yaml
from helpers import ROOT, SHIPPED_MODEL, TINY_CARD

from unet3d.card import card_from_dict, load_card
from unet3d.errors import CardError


def test_top_level_model_yaml_is_the_shipped_models_card():
    assert (ROOT / "model.yaml").read_text() == (SHIPPED_MODEL / "model.yaml").read_text()


def test_shipped_card_has_the_contract_fields():
    card = load_card(SHIPPED_MODEL / "model.yaml")
    raw = card.to_dict()
    assert card.class_names() == ["background", "grey_matter", "white_matter"]
    assert card.input.clip_percentiles == (1.0, 99.0) and card.input.pad_to_multiple == 16
    assert card.input.spacing_mm == (1.0, 1.0, 1.0)
    assert raw["intended_use"] == "research/demo, not for clinical use"
    assert raw["license"] == "mit"
    test = raw["metrics"]["test"]
    assert test["measured_on"]["split"] == "test" and len(test["measured_on"]["cases"]) == 8
    assert "python -m train fit" in raw["training"]["command"] and raw["training"]["seed"] == 0


def test_shipped_readme_carries_the_hub_header():
    text = (SHIPPED_MODEL / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["library_name"] == "unet3d" and header["license"] == "mit"
    assert "not for clinical use" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": []}, "classes must be a non-empty list"),
        ({"classes": [{"name": "a", "color": "red"}]}, "color must look like '#rrggbb'"),
        ({"classes": [{"index": 1, "name": "a"}]}, "list classes in index order from 0"),
        ({"input": {"clip_percentiles": [99, 1]}}, "0 <= low < high <= 100"),
        ({"input": {"colour": 1}}, "unknown field"),
        ({"inference": {"overlap": 1.5}}, r"inference.overlap must be a number in \[0, 1\), got 1.5"),
        ({"inference": {"patch_size": [0, 1, 2]}}, "three positive numbers"),
    ],
)
def test_invalid_cards_name_the_field(change, message):
    with pytest.raises(CardError, match=message):
        card_from_dict({**TINY_CARD, **change})


def test_a_card_without_a_name_is_refused():
    with pytest.raises(CardError, match="lacks the required field 'name'"):
        card_from_dict({k: v for k, v in TINY_CARD.items() if k != "name"})


def test_overrides_replace_card_values():
    card = card_from_dict(TINY_CARD)
    changed = card.with_overrides(clip_percentiles=(0.5, 99.5), pad_to_multiple=8)
    assert changed.input.clip_percentiles == (0.5, 99.5) and changed.input.pad_to_multiple == 8
    assert card.with_overrides(clip_percentiles=None).input.clip_percentiles is None
    assert card.with_overrides().input == card.input
