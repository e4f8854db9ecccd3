"""A synthetic open-vocabulary world: small images of shapes, glyphs and textures, with labels
and captions, split into seen and unseen concepts.

Every image shows objects, each one of 20 visually distinct concepts (filled shapes,
outlines, line drawings, textured patches) in a random colour, size and position on a random
background. Two layouts (``Layout``): ``large`` (the first world), 1-4 objects a third to a
half of a 64-pixel image's side; ``small`` (the paper's regime), 2-5 objects a sixth to a
quarter of a 128-pixel image's side, several of which a single class token may miss. An
image comes with its label set and several captions built from it ("a photo with a red circle
and a star", "there is a heart in the scene", ...). Captions may name only some of the
objects, as real captions do.

The concepts are split into 15 seen and 5 unseen. The data sets follow the paper's setting:

- ``pretrain``: images with captions naming any concept, for the vision-language model;
- ``train``: MKT training images labelled with seen concepts only. Unseen concepts appear in
  these images (with the same frequency as elsewhere) but are never labelled: the annotator's
  vocabulary simply lacks them, as NUS-WIDE's 925 seen tags lack its 81 unseen labels;
- ``val`` and ``test``: every concept labelled, for ZSL (unseen) and GZSL (all) evaluation.
  ``mkt-tag train --val val.csv`` uses the seen columns only.

Written in the formats ``mkt-tag train`` and ``mkt-tag eval`` read: ``train.csv``, ``val.csv``,
``test.csv`` (``path,labels`` with ``|`` between labels, paths relative to the CSV) and the
label files ``seen.txt``, ``unseen.txt``, ``all.txt``.

    python bench/synthetic/world.py --out bench/out/synthetic/world
    python bench/synthetic/world.py --world small --out bench/out/synthetic-small/world --sheet
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4  # drawn at 4x and downsampled, for smooth edges

SEEN = (
    "circle",
    "square",
    "triangle",
    "star",
    "moon",
    "diamond",
    "hexagon",
    "cross",
    "arrow",
    "spiral",
    "stripes",
    "checkerboard",
    "zigzag",
    "flower",
    "ladder",
)
UNSEEN = ("heart", "ring", "dots", "wave", "house")
CONCEPTS = SEEN + UNSEEN

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 50, 180),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "brown": (130, 80, 40),
    "gray": (128, 128, 128),
    "cyan": (40, 200, 220),
}

GRADIENT = 8.0  # largest brightness ramp across the background, in 0-255 steps
NOISE = 3.0  # standard deviation of the pixel noise, in 0-255 steps


@dataclass(frozen=True)
class Layout:
    """How images are drawn: their side, their objects' sides and how many objects they hold.

    ``LARGE`` (the first world): 64-pixel images of 1-4 objects a third to a half of the image's
    side, seen by an 8x8 grid of 8-pixel patches. ``SMALL`` (the paper's regime): 128-pixel
    images of 2-5 objects a sixth to a quarter of its side, seen by an 8x8 grid of 16-pixel
    patches, so that the backbone costs the same while each object covers about two by two
    patches and a single class token has to summarise up to five of them. (Objects of 16-27
    pixels, up to six, left a contrastive pretraining of 1,400 steps at chance: loss ln 64.)
    """

    size: int = 64  # image side in pixels
    patch: int = 8  # the backbone's patch side in pixels
    object_sizes: tuple[int, int] = (22, 35)  # object sides in pixels: [low, high)
    crowded: int = 5  # with 3 or more objects, sides are drawn from [low, high - crowded)
    counts: tuple[int, ...] = (1, 2, 3, 4)  # how many objects an image may hold
    weights: tuple[float, ...] = (0.25, 0.35, 0.25, 0.15)  # how likely each count is


LARGE = Layout()
SMALL = Layout(
    size=128,
    patch=16,
    object_sizes=(20, 34),
    crowded=6,
    counts=(2, 3, 4, 5),
    weights=(0.25, 0.3, 0.25, 0.2),
)


@dataclass
class Thing:
    """One object in an image."""

    concept: str
    colour: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels


@dataclass
class Sample:
    """An image with its label set and captions."""

    image: np.ndarray  # size x size x 3 uint8 (the layout's size)
    things: list[Thing]
    background: str
    captions: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """The concepts present, each once, in the order of ``CONCEPTS``."""
        present = {t.concept for t in self.things}
        return [c for c in CONCEPTS if c in present]


# --- drawing ------------------------------------------------------------------------------
# Each painter draws its concept into the box (x0, y0, x1, y1) of a supersampled canvas.

Box = tuple[float, float, float, float]
Painter = Callable[[ImageDraw.ImageDraw, Box, tuple[int, int, int], np.random.Generator], None]


def _polygon(cx: float, cy: float, radii: Sequence[float], start: float) -> list[tuple]:
    n = len(radii)
    return [
        (
            cx + r * math.cos(start + 2 * math.pi * i / n),
            cy + r * math.sin(start + 2 * math.pi * i / n),
        )
        for i, r in enumerate(radii)
    ]


def _centre(box: Box) -> tuple[float, float, float]:
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2


def _circle(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    draw.ellipse(box, fill=ink)


def _square(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    draw.polygon(_polygon(cx, cy, [r * 0.95] * 4, math.pi / 4 + rng.uniform(-0.3, 0.3)), fill=ink)


def _triangle(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    draw.polygon(
        _polygon(cx, cy + r * 0.15, [r] * 3, -math.pi / 2 + rng.uniform(-0.3, 0.3)), fill=ink
    )


def _star(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    draw.polygon(
        _polygon(cx, cy, [r, r * 0.42] * 5, -math.pi / 2 + rng.uniform(-0.3, 0.3)), fill=ink
    )


def _moon(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    # A disk with a disk of the background cut out: drawn as a mask, pasted in ink.
    _cx, _cy, r = _centre(box)
    angle = rng.uniform(0, 2 * math.pi)
    dx, dy = 0.55 * r * math.cos(angle), 0.55 * r * math.sin(angle)
    mask = Image.new("L", draw.im.size, 0)
    paint = ImageDraw.Draw(mask)
    paint.ellipse(box, fill=255)
    paint.ellipse((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), fill=0)
    draw.bitmap((0, 0), mask, fill=ink)


def _diamond(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    draw.polygon(_polygon(cx, cy, [r, r * 0.6, r, r * 0.6], -math.pi / 2), fill=ink)


def _hexagon(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    draw.polygon(_polygon(cx, cy, [r] * 6, rng.uniform(0, math.pi / 3)), fill=ink)


def _cross(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    w = r * 0.33
    draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=ink)
    draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=ink)


def _arrow(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    a = rng.choice([0, math.pi / 2, math.pi, 3 * math.pi / 2]) + rng.uniform(-0.3, 0.3)
    shape = [(-r, -0.2 * r), (0.1 * r, -0.2 * r), (0.1 * r, -0.6 * r), (r, 0), (0.1 * r, 0.6 * r)]
    shape += [(0.1 * r, 0.2 * r), (-r, 0.2 * r)]
    c, s = math.cos(a), math.sin(a)
    draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in shape], fill=ink)


def _spiral(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    start = rng.uniform(0, 2 * math.pi)
    turns = 2.5
    points = [
        (
            cx + r * t * math.cos(start + 2 * math.pi * turns * t),
            cy + r * t * math.sin(start + 2 * math.pi * turns * t),
        )
        for t in np.linspace(0.05, 1, 80)
    ]
    draw.line(points, fill=ink, width=max(1, int(r * 0.14)))


def _stripes(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    n = 4
    if rng.random() < 0.5:  # vertical
        step = (x1 - x0) / (2 * n - 1)
        for i in range(n):
            draw.rectangle((x0 + 2 * i * step, y0, x0 + (2 * i + 1) * step, y1), fill=ink)
    else:
        step = (y1 - y0) / (2 * n - 1)
        for i in range(n):
            draw.rectangle((x0, y0 + 2 * i * step, x1, y0 + (2 * i + 1) * step), fill=ink)


def _checkerboard(
    draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator
) -> None:
    x0, y0, x1, _y1 = box
    n = 4
    step = (x1 - x0) / n
    draw.rectangle(box, outline=ink, width=max(1, int(step * 0.15)))
    for i in range(n):
        for j in range(n):
            if (i + j) % 2 == 0:
                draw.rectangle(
                    (x0 + i * step, y0 + j * step, x0 + (i + 1) * step, y0 + (j + 1) * step),
                    fill=ink,
                )


def _zigzag(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    n = 5
    points = [(x0 + (x1 - x0) * i / n, y0 if i % 2 else y1) for i in range(n + 1)]
    draw.line(points, fill=ink, width=max(1, int((x1 - x0) * 0.09)), joint="curve")


def _flower(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    petal = r * 0.36
    start = rng.uniform(0, 2 * math.pi)
    for i in range(6):
        a = start + 2 * math.pi * i / 6
        px, py = cx + (r - petal) * math.cos(a), cy + (r - petal) * math.sin(a)
        draw.ellipse((px - petal, py - petal, px + petal, py + petal), fill=ink)


def _ladder(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    w = max(1, int((x1 - x0) * 0.1))
    left, right = x0 + (x1 - x0) * 0.2, x1 - (x1 - x0) * 0.2
    draw.line([(left, y0), (left, y1)], fill=ink, width=w)
    draw.line([(right, y0), (right, y1)], fill=ink, width=w)
    for i in range(1, 5):
        y = y0 + (y1 - y0) * i / 5
        draw.line([(left, y), (right, y)], fill=ink, width=w)


def _heart(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    cx, cy, r = _centre(box)
    points = []
    for t in np.linspace(0, 2 * math.pi, 60):
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((cx + r * x / 17, cy - r * (y + 2) / 17))
    draw.polygon(points, fill=ink)


def _ring(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    draw.ellipse(box, outline=ink, width=max(1, int((box[2] - box[0]) * 0.12)))


def _dots(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    x0, y0, x1, _y1 = box
    n = 3
    step = (x1 - x0) / n
    dot = step * 0.3
    for i in range(n):
        for j in range(n):
            px, py = x0 + (i + 0.5) * step, y0 + (j + 0.5) * step
            draw.ellipse((px - dot, py - dot, px + dot, py + dot), fill=ink)


def _wave(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    cy, amp = (y0 + y1) / 2, (y1 - y0) * 0.3
    phase = rng.uniform(0, 2 * math.pi)
    points = [
        (x, cy + amp * math.sin(phase + 4 * math.pi * (x - x0) / (x1 - x0)))
        for x in np.linspace(x0, x1, 60)
    ]
    draw.line(points, fill=ink, width=max(1, int((x1 - x0) * 0.09)))


def _house(draw: ImageDraw.ImageDraw, box: Box, ink: tuple, rng: np.random.Generator) -> None:
    x0, y0, x1, y1 = box
    mid = y0 + (y1 - y0) * 0.45
    draw.polygon([(x0, mid), ((x0 + x1) / 2, y0), (x1, mid)], fill=ink)
    draw.rectangle((x0 + (x1 - x0) * 0.15, mid, x1 - (x1 - x0) * 0.15, y1), fill=ink)


PAINTERS: dict[str, Painter] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "moon": _moon,
    "diamond": _diamond,
    "hexagon": _hexagon,
    "cross": _cross,
    "arrow": _arrow,
    "spiral": _spiral,
    "stripes": _stripes,
    "checkerboard": _checkerboard,
    "zigzag": _zigzag,
    "flower": _flower,
    "ladder": _ladder,
    "heart": _heart,
    "ring": _ring,
    "dots": _dots,
    "wave": _wave,
    "house": _house,
}
assert set(PAINTERS) == set(CONCEPTS)


def _distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _place(
    rng: np.random.Generator, sizes: Sequence[int], side: int
) -> list[tuple[int, int, int, int]] | None:
    """Boxes for objects of the given sizes in a ``side``-pixel image that overlap little
    (None: no room, retry)."""
    boxes: list[tuple[int, int, int, int]] = []
    for size in sizes:
        for _ in range(50):
            x, y = (int(v) for v in rng.integers(1, side - size - 1, size=2))
            box = (x, y, x + size, y + size)
            if all(_overlap(box, other) < 0.12 * size * size for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0, w) * max(0, h)


def draw_image(rng: np.random.Generator, concepts: Sequence[str], layout: Layout = LARGE) -> Sample:
    """An image holding ``concepts`` (one object each) in random colours, sizes and places."""
    side = layout.size
    while True:
        low, high = layout.object_sizes
        high = high if len(concepts) <= 2 else high - layout.crowded
        sizes = [int(rng.integers(low, high)) for _ in concepts]
        boxes = _place(rng, sizes, side)
        if boxes is not None:
            break
    names = list(COLOURS)
    background = str(rng.choice(names))
    bg = COLOURS[background]
    canvas = Image.new("RGB", (side * SUPERSAMPLE,) * 2, bg)
    # A soft random gradient and noise keep the background from being one flat colour.
    draw = ImageDraw.Draw(canvas)
    things = []
    for concept, box in zip(concepts, boxes, strict=True):
        # An ink that stands out from the background.
        candidates = [n for n in names if _distance(COLOURS[n], bg) > 150]
        colour = str(rng.choice(candidates))
        scaled = tuple(v * SUPERSAMPLE for v in box)
        PAINTERS[concept](draw, scaled, COLOURS[colour], rng)  # type: ignore[arg-type]
        things.append(Thing(concept, colour, box))
    image = canvas.resize((side, side), Image.Resampling.BOX)
    pixels = np.asarray(image, dtype=np.float32)
    ramp = np.linspace(-1, 1, side, dtype=np.float32)
    direction = rng.uniform(-GRADIENT, GRADIENT, size=2)
    pixels += direction[0] * ramp[None, :, None] + direction[1] * ramp[:, None, None]
    pixels += rng.normal(0, NOISE, size=pixels.shape).astype(np.float32)
    sample = Sample(np.clip(pixels, 0, 255).astype(np.uint8), things, background)
    return sample


# --- captions -----------------------------------------------------------------------------


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# Colours are named rarely: a caption that names every colour can be matched to its image by
# colour alone, and a contrastive model then learns colours instead of shapes.
COLOUR_P = 0.1  # chance that an object is named with its colour
PARTIAL_P = 0.25  # chance that a caption names only some of the objects


def _noun(thing: Thing, rng: np.random.Generator) -> str:
    words = f"{thing.colour} {thing.concept}" if rng.random() < COLOUR_P else thing.concept
    return f"{article(words)} {words}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


# Phrasings: {things} is the list ("a circle, a red star and a ring").
PHRASINGS = (
    "a photo of {things}",
    "a photo with {things}",
    "there is {things} in the scene",
    "there is {things} in the picture",
    "an image showing {things}",
    "a picture containing {things}",
    "a drawing of {things}",
    "{things}",
)
NEXT_TO = "there is {first} next to {rest}"


def captions(sample: Sample, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` captions of ``sample``; some name only some of its objects."""
    found = []
    for _ in range(n):
        things = list(sample.things)
        rng.shuffle(things)  # type: ignore[arg-type]
        if len(things) > 1 and rng.random() < PARTIAL_P:
            things = things[: int(rng.integers(1, len(things)))]
        nouns = [_noun(t, rng) for t in things]
        if len(nouns) > 1 and rng.random() < 0.15:
            found.append(NEXT_TO.format(first=nouns[0], rest=_join(nouns[1:])))
        else:
            phrasing = str(rng.choice(PHRASINGS))
            found.append(phrasing.format(things=_join(nouns)))
    return found


# --- data sets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What a world holds: its concepts, split into seen and unseen, and how it is drawn."""

    seen: tuple[str, ...] = SEEN
    unseen: tuple[str, ...] = UNSEEN
    max_objects: int = 4  # images hold at most this many objects (and what the layout allows)
    layout: Layout = LARGE

    @property
    def concepts(self) -> tuple[str, ...]:
        return self.seen + self.unseen


DEFAULT = Spec()
# The worlds of the experiment, by name: large objects (the first), small objects among many.
WORLDS = {"large": DEFAULT, "small": Spec(max_objects=5, layout=SMALL)}


def samples(seed: int, count: int, spec: Spec = DEFAULT, n_captions: int = 5) -> Iterator[Sample]:
    """``count`` seeded images with captions; the same seed always gives the same images."""
    rng = np.random.default_rng(seed)
    layout = spec.layout
    allowed = [i for i, n in enumerate(layout.counts) if n <= spec.max_objects]
    counts = [layout.counts[i] for i in allowed]
    weights = np.array([layout.weights[i] for i in allowed])
    weights = weights / weights.sum()
    for _ in range(count):
        n_objects = int(rng.choice(counts, p=weights))
        concepts = [str(c) for c in rng.choice(spec.concepts, size=n_objects, replace=False)]
        sample = draw_image(rng, concepts, layout)
        sample.captions = captions(sample, rng, n_captions)
        yield sample


# Distinct seeds per split: no image is shared between them.
SPLIT_SEEDS = {"pretrain": 1000, "train": 2000, "val": 3000, "test": 4000}
DEFAULT_SIZES = {"pretrain": 12000, "train": 2000, "val": 400, "test": 1000}


def pretrain_arrays(
    count: int, spec: Spec = DEFAULT, seed: int = SPLIT_SEEDS["pretrain"]
) -> tuple[np.ndarray, list[list[str]]]:
    """Pretraining images (N x size x size x 3 uint8) and their captions, in memory."""
    side = spec.layout.size
    images = np.empty((count, side, side, 3), dtype=np.uint8)
    texts = []
    for i, sample in enumerate(samples(seed, count, spec)):
        images[i] = sample.image
        texts.append(sample.captions)
    return images, texts


def write_split(folder: Path, name: str, count: int, spec: Spec, vocabulary: Sequence[str]) -> Path:
    """Images as PNG under ``folder/name/``; ``folder/name.csv`` labelled with ``vocabulary``.

    The CSV has ``path`` and ``labels`` (``|``-joined) columns, which mkt-tag reads, and a
    ``caption`` column, which it ignores.
    """
    images = folder / name
    images.mkdir(parents=True, exist_ok=True)
    wanted = set(vocabulary)
    rows = []
    for i, sample in enumerate(samples(SPLIT_SEEDS[name], count, spec)):
        path = images / f"{i:05d}.png"
        Image.fromarray(sample.image).save(path, compress_level=1)
        labels = [label for label in sample.labels if label in wanted]
        rows.append(
            {
                "path": f"{name}/{path.name}",
                "labels": "|".join(labels),
                "caption": sample.captions[0],
            }
        )
    table = folder / f"{name}.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "labels", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return table


def read_split(table: Path, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """A written split's images (N x size x size x 3 uint8) and +1/-1 targets over ``labels``."""
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    pixels = np.stack(
        [np.asarray(Image.open(table.parent / r["path"]).convert("RGB")) for r in rows]
    )
    targets = np.array(
        [[1 if label in r["labels"].split("|") else -1 for label in labels] for r in rows],
        dtype=np.int8,
    )
    return pixels, targets


def write_labels(folder: Path, spec: Spec = DEFAULT) -> dict[str, Path]:
    """``seen.txt``, ``unseen.txt`` and ``all.txt`` (seen, then unseen), one label a line."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, labels in (("seen", spec.seen), ("unseen", spec.unseen), ("all", spec.concepts)):
        files[name] = folder / f"{name}.txt"
        files[name].write_text("\n".join(labels) + "\n", encoding="utf-8")
    return files


def write_world(
    folder: Path, sizes: dict[str, int] | None = None, spec: Spec = DEFAULT
) -> dict[str, Path]:
    """Label files and the train / val / test sets under ``folder``; their paths by name.

    ``train.csv`` lists seen labels only; ``val.csv`` and ``test.csv`` every label. Pretraining
    images are not written: ``pretrain.py`` generates them in memory. An existing world made
    with the same sizes and spec is reused (``world.json`` records them).
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    drawing = {"noise": NOISE, "gradient": GRADIENT, "supersample": SUPERSAMPLE}
    captions = {"colour_p": COLOUR_P, "partial_p": PARTIAL_P}
    record = {"sizes": sizes, "spec": asdict(spec), "drawing": drawing, "captions": captions}
    record = json.loads(json.dumps(record))
    marker = folder / "world.json"
    files = {name: folder / f"{name}.csv" for name in ("train", "val", "test")}
    files.update({name: folder / f"{name}.txt" for name in ("seen", "unseen", "all")})
    if marker.is_file() and json.loads(marker.read_text()) == record:
        return files
    write_labels(folder, spec)
    for name in ("train", "val", "test"):
        vocabulary = spec.seen if name == "train" else spec.concepts
        write_split(folder, name, sizes[name], spec, vocabulary)
    marker.write_text(json.dumps(record, indent=2) + "\n")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/synthetic/world"))
    parser.add_argument("--world", choices=sorted(WORLDS), default="large")
    parser.add_argument("--train", type=int, default=DEFAULT_SIZES["train"])
    parser.add_argument("--val", type=int, default=DEFAULT_SIZES["val"])
    parser.add_argument("--test", type=int, default=DEFAULT_SIZES["test"])
    parser.add_argument("--sheet", action="store_true", help="Also write a contact sheet PNG.")
    args = parser.parse_args()
    spec = WORLDS[args.world]
    sizes = {"train": args.train, "val": args.val, "test": args.test}
    files = write_world(args.out, sizes, spec)
    for path in files.values():
        print(f"wrote {path}")
    if args.sheet:
        sheet = contact_sheet(list(samples(SPLIT_SEEDS["test"], 48, spec)))
        sheet.save(args.out / "sheet.png")
        print(f"wrote {args.out / 'sheet.png'}")


def contact_sheet(shown: Sequence[Sample], columns: int = 8) -> Image.Image:
    """The images side by side, at 2x, to look at."""
    rows = math.ceil(len(shown) / columns)
    tile = max(s.image.shape[0] for s in shown) * 2
    sheet = Image.new("RGB", (columns * tile, rows * tile), (255, 255, 255))
    for i, sample in enumerate(shown):
        image = Image.fromarray(sample.image).resize((tile, tile), Image.Resampling.NEAREST)
        sheet.paste(image, ((i % columns) * tile, (i // columns) * tile))
    return sheet


if __name__ == "__main__":
    main()
