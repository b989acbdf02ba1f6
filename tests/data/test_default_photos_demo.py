"""Whole held-out photos for the demo, and the capped-area crop sampling of the training photos."""

import torch

from gaussquant.data.default_photos import MAX_PHOTO_WEIGHT, DefaultPhotoCrops, whole_held_out_photos


def test_whole_photos_keep_their_aspect_and_fit_the_model_grid():
    photos = dict(whole_held_out_photos(512, 4))
    assert set(photos) == {"chelsea", "china", "grace_hopper"}
    assert tuple(photos["chelsea"].shape) == (3, 300, 448)  # native 300 x 451, never enlarged
    assert tuple(photos["china"].shape) == (3, 340, 512)  # 427 x 640 shrunk to longer side 512
    assert tuple(photos["grace_hopper"].shape) == (3, 512, 436)
    for image in photos.values():
        assert image.shape[-1] % 4 == 0 and image.shape[-2] % 4 == 0 and image.abs().max() <= 1


def test_no_training_photo_dominates_the_crops():
    crops = DefaultPhotoCrops("train", image_size=32, num_crops=4000, seed=0, max_photo_weight=MAX_PHOTO_WEIGHT)
    counts = torch.bincount(crops.crops[:, 0], minlength=len(crops.names)).double() / 4000
    areas = torch.tensor([min(p.shape[0] * p.shape[1], MAX_PHOTO_WEIGHT) for p in crops.photos]).double()
    expected = areas / areas.sum()
    assert (counts - expected).abs().max() < 0.03
    assert counts.max() < 0.2  # the retina scan (1411 x 1411) no longer takes 44 % of the crops
    plain = DefaultPhotoCrops("train", image_size=32, num_crops=4000, seed=0)
    assert torch.bincount(plain.crops[:, 0]).max() / 4000 > 0.4  # by default every pixel is equally likely
