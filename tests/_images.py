"""Test images shared by the imaging and thumbnail tests: four colours in four quadrants, so
a test can tell which way an image came out turned."""

from __future__ import annotations

from PIL import Image

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def quadrants(size: tuple[int, int] = (400, 300)) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right yellow."""
    w, h = size
    im = Image.new("RGB", size, RED)
    im.paste(GREEN, (w // 2, 0, w, h // 2))
    im.paste(BLUE, (0, h // 2, w // 2, h))
    im.paste(YELLOW, (w // 2, h // 2, w, h))
    return im
