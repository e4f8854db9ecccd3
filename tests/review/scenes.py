"""Drawn photos for the review's screenshots: clear scenes anyone recognises at thumbnail
size (a sunset, a dog, a beach, a stop sign...), with the tags a model might give them,
right ones and a few wrong ones, scored as a CLIP model scores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mkt_tag.results import Tag, TagResult, write_results

SIZE = (480, 360)
# examples/labels.txt, and a few more for the outdoor scenes
LABELS = [
    "sunset", "beach", "sea", "sky", "stop sign", "traffic light", "road", "pizza", "text",
    "cat", "dog", "car", "boat", "mountain", "snow", "lake", "tree", "flower",
]  # fmt: skip

Colour = tuple[int, int, int]


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def gradient(top: Colour, bottom: Colour, height: int = SIZE[1]) -> Image.Image:
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        colour = tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        draw.line([(0, y), (SIZE[0], y)], fill=colour)  # type: ignore[arg-type]
    return image


def sunset() -> Image.Image:
    image = gradient((70, 40, 110), (250, 150, 60), 230)
    draw = ImageDraw.Draw(image)
    draw.ellipse([180, 150, 300, 270], fill=(255, 215, 100))
    draw.rectangle([0, 215, 480, 360], fill=(30, 45, 90))
    for y in range(225, 360, 12):  # the sun in the water
        half = 70 - (y - 225) // 3
        draw.line([(240 - half, y), (240 + half, y)], fill=(245, 170, 80), width=3)
    return image


def beach() -> Image.Image:
    image = gradient((90, 160, 230), (190, 225, 250), 170)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 150, 480, 230], fill=(20, 120, 170))  # sea
    draw.polygon([(0, 215), (480, 195), (480, 360), (0, 360)], fill=(238, 214, 160))  # sand
    for x in range(20, 480, 70):
        draw.arc([x, 200, x + 60, 220], 180, 360, fill=(255, 255, 255), width=3)
    draw.line([(330, 330), (345, 200)], fill=(90, 70, 50), width=5)  # parasol
    draw.pieslice([265, 170, 425, 250], 180, 360, fill=(220, 40, 40))
    draw.pieslice([305, 170, 385, 250], 180, 360, fill=(250, 250, 250))
    draw.ellipse([330, 40, 380, 90], fill=(255, 235, 120))
    return image


def dog(background: Colour = (120, 180, 80), sky: Colour | None = (160, 205, 240)) -> Image.Image:
    image = Image.new("RGB", SIZE, background)
    draw = ImageDraw.Draw(image)
    if sky is not None:
        draw.rectangle([0, 0, 480, 150], fill=sky)
    brown, dark = (165, 105, 50), (95, 55, 25)
    for x in (165, 195, 285, 315):  # legs
        draw.rounded_rectangle([x, 220, x + 22, 310], radius=8, fill=brown)
    draw.ellipse([140, 150, 350, 250], fill=brown)  # body
    draw.line([(345, 180), (395, 125)], fill=brown, width=16)  # tail up
    draw.ellipse([80, 90, 200, 195], fill=brown)  # head
    draw.ellipse([45, 135, 115, 185], fill=brown)  # muzzle
    draw.ellipse([40, 140, 62, 160], fill=(20, 20, 20))  # nose
    draw.ellipse([120, 85, 160, 170], fill=dark)  # ear, hanging
    draw.ellipse([100, 118, 114, 132], fill=(20, 20, 20))  # eye
    draw.chord([60, 160, 110, 200], 0, 180, fill=(220, 80, 90))  # tongue
    return image


def cat() -> Image.Image:
    image = Image.new("RGB", SIZE, (205, 180, 150))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 260, 480, 360], fill=(140, 60, 60))  # rug
    grey = (120, 120, 125)
    draw.ellipse([170, 160, 330, 330], fill=grey)  # body, sitting
    draw.line([(320, 300), (390, 250), (400, 200)], fill=grey, width=16, joint="curve")
    draw.ellipse([180, 60, 300, 170], fill=grey)  # head
    draw.polygon([(185, 95), (195, 30), (235, 75)], fill=grey)  # ears
    draw.polygon([(295, 95), (285, 30), (245, 75)], fill=grey)
    for x in (208, 256):
        draw.ellipse([x, 95, x + 20, 120], fill=(120, 190, 60))
        draw.ellipse([x + 7, 97, x + 13, 118], fill=(10, 10, 10))
    draw.polygon([(232, 128), (248, 128), (240, 138)], fill=(230, 140, 150))
    for dy in (-6, 2, 10):  # whiskers
        draw.line([(225, 135), (160, 130 + dy)], fill=(245, 245, 245), width=2)
        draw.line([(255, 135), (320, 130 + dy)], fill=(245, 245, 245), width=2)
    return image


def stop_sign() -> Image.Image:
    image = gradient((110, 170, 230), (190, 220, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 300, 480, 360], fill=(80, 80, 85))
    draw.rectangle([232, 200, 248, 330], fill=(120, 120, 120))
    cx, cy, r = 240, 130, 100
    angles = [math.pi / 8 + i * math.pi / 4 for i in range(8)]
    points = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    draw.polygon(points, fill=(200, 20, 30), outline=(255, 255, 255), width=6)
    draw.text((cx, cy), "STOP", fill=(255, 255, 255), font=font(58), anchor="mm")
    return image


def road(with_car: bool) -> Image.Image:
    image = gradient((120, 175, 230), (200, 225, 245), 160)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 150, 480, 360], fill=(110, 150, 80))
    draw.polygon([(200, 150), (280, 150), (480, 360), (0, 360)], fill=(70, 70, 75))
    for y in range(160, 360, 40):
        half = 2 + (y - 150) // 30
        draw.rectangle([240 - half, y, 240 + half, y + 20], fill=(240, 240, 240))
    if with_car:
        red = (200, 30, 30)
        draw.rounded_rectangle([150, 230, 340, 300], radius=14, fill=red)
        draw.polygon([(185, 232), (215, 190), (285, 190), (310, 232)], fill=red)
        draw.polygon([(198, 230), (220, 198), (246, 198), (246, 230)], fill=(170, 210, 235))
        draw.polygon([(252, 230), (252, 198), (280, 198), (298, 230)], fill=(170, 210, 235))
        for x in (170, 280):
            draw.ellipse([x, 275, x + 42, 317], fill=(25, 25, 25))
        draw.rectangle([150, 255, 164, 268], fill=(255, 230, 120))
    else:
        draw.rectangle([372, 130, 384, 330], fill=(60, 60, 60))
        draw.rounded_rectangle([345, 20, 411, 150], radius=12, fill=(30, 30, 30))
        for i, colour in enumerate([(70, 20, 20), (90, 70, 20), (40, 220, 90)]):
            draw.ellipse([360, 30 + i * 40, 396, 66 + i * 40], fill=colour)
    return image


def pizza() -> Image.Image:
    image = Image.new("RGB", SIZE, (120, 80, 50))  # a wooden table
    draw = ImageDraw.Draw(image)
    draw.ellipse([95, 35, 385, 325], fill=(215, 160, 80))  # crust
    draw.ellipse([115, 55, 365, 305], fill=(200, 50, 30))  # tomato
    draw.ellipse([125, 65, 355, 295], fill=(245, 215, 120))  # cheese
    salami = [(180, 110), (270, 100), (300, 190), (210, 220), (160, 180), (250, 260), (240, 160)]
    for x, y in salami:
        draw.ellipse([x - 18, y - 18, x + 18, y + 18], fill=(180, 40, 35))  # salami
    for x, y in [(215, 130), (310, 240), (190, 260), (280, 150)]:
        draw.ellipse([x - 7, y - 5, x + 7, y + 5], fill=(50, 120, 40))  # basil
    for angle in (0, 60, 120):
        a = math.radians(angle)
        dx, dy = 145 * math.cos(a), 145 * math.sin(a)
        draw.line([(240 - dx, 180 - dy), (240 + dx, 180 + dy)], fill=(160, 110, 60), width=2)
    return image


def mountains() -> Image.Image:
    image = gradient((100, 160, 225), (215, 230, 245), 200)
    draw = ImageDraw.Draw(image)
    draw.polygon([(-40, 230), (130, 60), (300, 230)], fill=(110, 110, 130))
    draw.polygon([(130, 230), (320, 40), (520, 230)], fill=(90, 95, 115))
    draw.polygon([(130, 60), (98, 92), (118, 100), (140, 86), (165, 95)], fill=(250, 250, 252))
    draw.polygon([(320, 40), (280, 80), (305, 90), (330, 75), (360, 80)], fill=(250, 250, 252))
    draw.rectangle([0, 230, 480, 360], fill=(60, 110, 160))  # lake
    for x in range(10, 480, 38):  # pines on the shore
        draw.polygon([(x, 250), (x + 14, 205), (x + 28, 250)], fill=(30, 80, 45))
    image = image.filter(ImageFilter.SMOOTH)
    return image


def boat() -> Image.Image:
    image = gradient((120, 180, 235), (210, 230, 250), 230)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 230, 480, 360], fill=(25, 90, 150))
    for y in range(245, 360, 18):
        for x in range(0, 480, 60):
            draw.arc([x, y, x + 40, y + 10], 180, 360, fill=(200, 225, 245), width=2)
    draw.polygon([(150, 240), (350, 240), (320, 280), (180, 280)], fill=(120, 60, 30))  # hull
    draw.line([(250, 240), (250, 60)], fill=(80, 60, 40), width=6)
    draw.polygon([(255, 70), (255, 230), (345, 230)], fill=(250, 250, 245))
    draw.polygon([(245, 90), (245, 230), (175, 230)], fill=(235, 90, 70))
    return image


def flowers() -> Image.Image:
    image = gradient((150, 200, 240), (120, 180, 90), 360)
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 170, 480, 360], fill=(90, 150, 60))
    for n, (x, y) in enumerate([(90, 200), (230, 160), (370, 210), (160, 290), (310, 300)]):
        draw.line([(x, y), (x + 5, 360)], fill=(40, 110, 40), width=6)
        petals = [(250, 200, 40), (240, 90, 140), (250, 130, 40)][n % 3]
        for i in range(8):
            a = i * math.pi / 4
            px, py = x + 28 * math.cos(a), y + 28 * math.sin(a)
            draw.ellipse([px - 18, py - 18, px + 18, py + 18], fill=petals)
        draw.ellipse([x - 16, y - 16, x + 16, y + 16], fill=(110, 70, 30))
    return image


# photo name -> (how to draw it, the model's tags): right tags and a few wrong ones
SCENES: dict[str, tuple[Callable[[], Image.Image], dict[str, float]]] = {
    "IMG_2041.jpg": (sunset, {"sunset": 0.94, "sea": 0.78, "sky": 0.61, "beach": 0.34}),
    "IMG_2057.jpg": (beach, {"beach": 0.91, "sea": 0.83, "sky": 0.57}),
    "IMG_2113.jpg": (dog, {"dog": 0.88, "tree": 0.21}),
    "IMG_2118.jpg": (cat, {"cat": 0.93, "dog": 0.31}),
    "IMG_2162.jpg": (lambda: dog((238, 214, 160), (90, 160, 220)), {"dog": 0.64, "beach": 0.58}),
    "IMG_2204.jpg": (stop_sign, {"stop sign": 0.96, "text": 0.47, "road": 0.26}),
    "IMG_2210.jpg": (lambda: road(with_car=False), {"traffic light": 0.86, "road": 0.79}),
    "IMG_2231.jpg": (lambda: road(with_car=True), {"car": 0.92, "road": 0.81, "stop sign": 0.18}),
    "IMG_2302.jpg": (pizza, {"pizza": 0.97, "flower": 0.23}),
    "IMG_2355.jpg": (mountains, {"mountain": 0.89, "lake": 0.71, "snow": 0.55, "tree": 0.44}),
    "IMG_2380.jpg": (boat, {"boat": 0.9, "sea": 0.76, "sky": 0.52, "sunset": 0.27}),
    "IMG_2417.jpg": (flowers, {"flower": 0.95, "sky": 0.38}),
}


def draw_scenes(folder: Path) -> list[TagResult]:
    """Draw every scene as a JPEG in ``folder``; their tagging results."""
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for name, (draw, scores) in SCENES.items():
        draw().save(folder / name, quality=88)
        results.append(TagResult(folder / name, [Tag(label, s) for label, s in scores.items()]))
    return results


def write_review(root: Path) -> tuple[Path, Path]:
    """The scenes in ``root/Photos``, their results ``root/tags.csv`` and the vocabulary
    ``root/labels.txt``."""
    results = root / "tags.csv"
    write_results(results, draw_scenes(root / "Photos"))
    labels = root / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return results, labels
