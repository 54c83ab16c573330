"""Training-time augmentation: off by default, the statistics it promises when on."""
import pytest
import torch
from traitlets.config import Config

from ctapipe_gammaphysnet.training.augmentation import ImageAugmentation


def test_off_by_default_returns_the_batch():
    image, time = torch.rand(4, 100), torch.rand(4, 100)
    augmentation = ImageAugmentation()
    assert not augmentation.enabled
    out_image, out_time = augmentation(image, time)
    assert out_image is image and out_time is time


def test_extra_background_gain_and_jitter_statistics():
    torch.manual_seed(0)
    config = Config({"ImageAugmentation": {"extra_nsb_pe": 4.0, "gain_spread": 0.1,
                                           "time_jitter_ns": 0.5}})
    augmentation = ImageAugmentation(config=config)
    image = torch.full((2000, 200), 100.0)
    time = torch.full((2000, 200), 20.0)
    out_image, out_time = augmentation(image, time)
    difference = out_image - image
    # pedestal-subtracted: no bias; variance = gain part + the mean of the uniform level (2 p.e.)
    assert abs(float(difference.mean())) < 0.05
    expected_variance = (0.1 * 100) ** 2 + 2.0
    assert float(difference.var()) == pytest.approx(expected_variance, rel=0.03)
    assert float((out_time - time).std()) == pytest.approx(0.5, rel=0.02)
    # the level is drawn per image: the per-image variance of the background part spreads
    background_only = ImageAugmentation(config=Config({"ImageAugmentation": {"extra_nsb_pe": 4.0}}))
    per_image = background_only(torch.zeros(500, 2000), torch.zeros(500, 2000))[0].var(dim=1)
    assert float(per_image.min()) < 0.5 and float(per_image.max()) > 3.5


def test_negative_settings_are_refused():
    with pytest.raises(ValueError, match="extra_nsb_pe"):
        ImageAugmentation(config=Config({"ImageAugmentation": {"extra_nsb_pe": -1.0}}))
