"""A `fit` transcoding target (a client's largest picture): scaled down with the aspect ratio kept, never up."""

from __future__ import annotations

import pytest

from media.transcode import Target, output_size


@pytest.mark.parametrize(("bounds", "source", "expected"), [
    ((160, 120), (320, 240), (160, 120)),
    ((160, 120), (640, 360), (160, 90)),
    ((160, 120), (240, 480), (60, 120)),
    ((160, 120), (128, 96), (128, 96)),  # smaller: as it is
    ((320, 0), (640, 480), (320, 240)),  # one bound only
    ((0, 100), (640, 480), (134, 100)),  # kept even
])
def test_fit_scales_down_within_the_bounds(bounds: tuple[int, int], source: tuple[int, int],
                                           expected: tuple[int, int]) -> None:
    assert output_size(Target("video", "VP8", *bounds, fit=True), *source) == expected


def test_fit_is_part_of_what_a_target_is() -> None:
    assert Target("video", "VP8", 160, 120, fit=True) != Target("video", "VP8", 160, 120)
    assert output_size(Target("video", "VP8", 160, 120), 640, 360) == (160, 120)  # exact, as before
