"""Draw the example photos in examples/photos (committed; rerun only to change them).

Simple drawn scenes that a real CLIP model recognises: CLIP reads text and knows shapes and
colours, so a red octagon saying STOP is a "stop sign" to it.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).parent / "photos"
SIZE = (480, 360)


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def sunset() -> Image.Image:
    image = Image.new("RGB", SIZE)
    draw = ImageDraw.Draw(image)
    for y in range(220):  # sky: orange to purple
        t = y / 220
        draw.line(
            [(0, y), (SIZE[0], y)], fill=(int(250 - 90 * t), int(150 - 100 * t), int(60 + 80 * t))
        )
    draw.ellipse([190, 150, 290, 250], fill=(255, 210, 90))
    draw.rectangle([0, 220, SIZE[0], SIZE[1]], fill=(20, 50, 110))  # sea
    for y in range(230, SIZE[1], 14):
        draw.line([(60, y), (420, y)], fill=(240, 160, 80), width=2)
    return image


def stop_sign() -> Image.Image:
    image = Image.new("RGB", SIZE, (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([232, 200, 248, SIZE[1]], fill=(120, 120, 120))
    cx, cy, r = 240, 130, 100
    points = []
    import math

    for i in range(8):
        angle = math.pi / 8 + i * math.pi / 4
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    draw.polygon(points, fill=(200, 20, 30), outline=(255, 255, 255), width=6)
    draw.text((cx, cy), "STOP", fill=(255, 255, 255), font=font(56), anchor="mm")
    return image


def word_card(word: str, background: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", SIZE, background)
    ImageDraw.Draw(image).text(
        (SIZE[0] / 2, SIZE[1] / 2), word, fill=(0, 0, 0), font=font(90), anchor="mm"
    )
    return image


def traffic_light() -> Image.Image:
    image = Image.new("RGB", SIZE, (150, 200, 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle([230, 240, 250, SIZE[1]], fill=(60, 60, 60))
    draw.rounded_rectangle([185, 30, 295, 250], radius=20, fill=(30, 30, 30))
    for i, colour in enumerate([(230, 30, 30), (90, 70, 20), (20, 70, 30)]):
        draw.ellipse([210, 45 + i * 68, 270, 105 + i * 68], fill=colour)
    return image


if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    sunset().save(HERE / "sunset.jpg", quality=90)
    stop_sign().save(HERE / "stop_sign.jpg", quality=90)
    traffic_light().save(HERE / "traffic_light.png")
    word_card("pizza", (250, 240, 200)).save(HERE / "pizza_card.webp", quality=90)
    print(f"wrote {len(list(HERE.iterdir()))} images to {HERE}")
