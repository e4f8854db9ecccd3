"""Shared pieces of mkt-tag's benchmarks: synthetic photos, an offline model cache, labels.

Nothing here reaches the network. Heavy imports (torch, open_clip) happen inside the functions
that need them, so a benchmark can set ``HF_HUB_OFFLINE`` before huggingface_hub is imported.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

BACKBONE = "ViT-B-16:openai"
OUT = Path(__file__).parent / "out"  # gitignored

# Everyday things, scenes and moods: the kind of vocabulary a photo library is tagged with.
EVERYDAY_LABELS = """
dog, cat, horse, cow, sheep, bird, duck, chicken, fish, butterfly, bee, squirrel, rabbit,
deer, bear, elephant, giraffe, zebra, lion, monkey, person, man, woman, child, baby, crowd,
family, friends, couple, portrait, selfie, wedding, birthday party, concert, festival,
parade, graduation, picnic, barbecue, beach, sea, ocean waves, lake, river, waterfall,
mountain, hill, valley, forest, jungle, desert, snow, glacier, ice, field, meadow, garden,
park, playground, farm, vineyard, island, cliff, cave, sky, clouds, sunset, sunrise, night,
stars, moon, rainbow, rain, fog, storm, lightning, city, street, road, highway, bridge,
tunnel, skyscraper, building, house, church, castle, temple, ruins, monument, statue,
fountain, market, shop, restaurant, cafe, bar, kitchen, living room, bedroom, bathroom,
office, classroom, library, museum, airport, train station, harbour, stadium, swimming pool,
gym, car, truck, bus, bicycle, motorcycle, train, tram, airplane, helicopter, boat,
sailboat, ship, tractor, traffic light, street sign, bench, umbrella, backpack, suitcase,
handbag, hat, glasses, shoes, dress, suit, jacket, scarf, book, laptop, phone, camera,
television, clock, lamp, chair, sofa, table, bed, window, door, stairs, plant, flower,
rose, sunflower, tulip, tree, palm tree, leaves, grass, pizza, burger, sandwich, salad,
soup, cake, ice cream, bread, cheese, fruit, apple, banana, orange, strawberry, grapes,
vegetables, coffee, tea, wine, beer, cocktail, bottle, cup, plate, candle, christmas tree,
fireworks, balloon, gift, toy, teddy bear, ball, football, tennis, basketball, skiing,
surfing, hiking, camping, tent, campfire, running, cycling, swimming, dancing, music,
guitar, piano, drawing, painting, graffiti, text, document, screenshot, map, flag
"""


# Qualifiers that turn the everyday words into more labels of realistic length ("old dog").
QUALIFIERS = ("red", "old", "small", "wet", "bright", "dark", "empty", "busy", "wooden")


def labels(n: int) -> list[str]:
    """``n`` distinct everyday labels: the words, then qualified words ("old dog", ...)."""
    words = [w.strip() for w in EVERYDAY_LABELS.replace("\n", " ").split(",") if w.strip()]
    pool = words + [f"{q} {w}" for q in QUALIFIERS for w in words]
    if n > len(pool):
        raise ValueError(f"only {len(pool)} labels available, {n} asked")
    return pool[:n]


def write_labels(path: Path, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# benchmark labels\n" + "\n".join(labels(n)) + "\n", encoding="utf-8")
    return path


# --- synthetic photos --------------------------------------------------------------------

_GRAIN_OFFSET = 64  # grain images store noise + 64 so that uint8 can hold negative values
_GRAIN_MARGIN = 64  # each photo takes its grain from a random offset in a larger field


def _grain(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Sensor-like noise: per-channel fine grain plus blotchy luminance texture."""
    fine = rng.standard_normal((height, width, 3), dtype=np.float32) * 5.0
    coarse = rng.standard_normal((height // 4 + 1, width // 4 + 1), dtype=np.float32) * 10.0
    blotches = Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    fine += np.asarray(blotches, dtype=np.float32)[..., None] - 128 + _GRAIN_OFFSET
    return Image.fromarray(np.clip(fine, 0, 255).astype(np.uint8))


def _scene(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth sky-to-ground gradient with soft-edged shapes, drawn small and upscaled."""
    small_w, small_h = max(32, width // 4), max(24, height // 4)
    y = np.linspace(0, 1, small_h, dtype=np.float32)[:, None, None]
    x = np.linspace(-0.5, 0.5, small_w, dtype=np.float32)[None, :, None]
    top, bottom, tilt = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(-60, 60, 3)
    image = Image.fromarray(np.clip(top * (1 - y) + bottom * y + tilt * x, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(15, 50))):
        cx, cy = rng.uniform(0, 1) * small_w, rng.uniform(0, 1) * small_h
        rx = small_w * float(np.exp(rng.uniform(np.log(0.005), np.log(0.15))))
        ry = rx * rng.uniform(0.3, 2.0)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(box, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    return image.resize((width, height), Image.Resampling.BICUBIC)


def synthetic_photos(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """``n`` photo-like JPEGs (quality 90) in ``folder``; files already there are reused.

    A 4000 x 3000 one is ~2.5-3 MB, so JPEG decoding costs about what a camera photo costs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{i:04d}.jpg" for i in range(n)]
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return paths
    width, height = size
    rng = np.random.default_rng([seed, width, height])
    grain = _grain(rng, width + _GRAIN_MARGIN, height + _GRAIN_MARGIN)
    for path in missing:
        dx, dy = (int(d) for d in rng.integers(0, _GRAIN_MARGIN, 2))
        noise = grain.crop((dx, dy, dx + width, dy + height))
        photo = ImageChops.add(_scene(rng, width, height), noise, 1.0, -_GRAIN_OFFSET)
        partial = path.with_suffix(".part")
        photo.save(partial, format="JPEG", quality=90)
        partial.replace(path)  # an interrupted run never leaves a truncated photo behind
    return paths


# Camera-sized photos, where JPEG decoding costs most, and small ones, where the model does.
PHOTO_SETS = {"large": (4000, 3000), "small": (640, 480)}


def linked_folder(folder: Path, photos: list[Path]) -> list[Path]:
    """``folder`` holding links to ``photos`` (a command takes a folder; the photos stay
    shared between benchmarks); the links, in the photos' order."""
    folder.mkdir(parents=True, exist_ok=True)
    links = [folder / photo.name for photo in photos]
    for link, photo in zip(links, photos, strict=True):
        if not link.exists():
            link.symlink_to(photo)
    return links


def photo_sets(folder: Path, counts: dict[str, int]) -> dict[str, list[Path]]:
    """``counts[name]`` photos of each ``PHOTO_SETS`` size in ``folder/name`` (0: none)."""
    return {
        name: synthetic_photos(folder / name, counts[name], size)
        for name, size in PHOTO_SETS.items()
        if counts.get(name, 0) > 0
    }


# --- offline model cache -----------------------------------------------------------------


def offline_env(cache: Path) -> dict[str, str]:
    """Environment for mkt-tag runs against ``cache`` with the hub switched off."""
    return {**os.environ, "MKT_TAG_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def seed_hub_cache(cache: Path, backbone: str = BACKBONE, seed: int = 0) -> Path:
    """Put random weights for ``backbone`` where mkt-tag looks for the real ones.

    The file goes into the Hugging Face layout inside the mkt-tag cache
    (``hub/models--ORG--NAME/snapshots/REV/open_clip_model.safetensors`` + ``refs/main``),
    so ``mkt-tag --model ViT-B-16:openai`` takes its real, offline resolution path. Speed
    does not depend on the values. An existing file is reused.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    from mkt_tag import hub

    arch, _, tag = backbone.partition(":")
    pretrained = open_clip.get_pretrained_cfg(arch, tag)
    repo = pretrained["hf_hub"].strip("/")
    revision = "0" * 40  # any commit-like name; refs/main points at it
    repo_dir = hub.hub_cache(cache) / f"models--{repo.replace('/', '--')}"
    weights = repo_dir / "snapshots" / revision / hub.SAFE_WEIGHTS
    if not weights.is_file():
        weights.parent.mkdir(parents=True, exist_ok=True)
        name = f"{arch}-quickgelu" if pretrained.get("quick_gelu") else arch
        torch.manual_seed(seed)
        logging.disable(logging.WARNING)  # "No pretrained weights loaded": that is the point
        try:
            model = open_clip.create_model(name, pretrained=None)
        finally:
            logging.disable(logging.NOTSET)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        partial = weights.with_suffix(".part")
        save_file(state, str(partial), metadata={"format": "pt"})
        partial.replace(weights)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return weights


def offline_tagger(cache: Path, device: str = "auto", precision: str = "auto") -> Any:
    """A ``Tagger`` on the benchmark backbone from ``cache`` (``seed_hub_cache`` filled it)."""
    from mkt_tag import checkpoints
    from mkt_tag.tagging.tagger import Tagger

    return Tagger(checkpoints.load(BACKBONE, cache, download=False), device, precision)


# --- machine -----------------------------------------------------------------------------


class OtherLoad:
    """How many CPUs other processes kept busy, on average, since this object was made.

    A benchmark on a shared machine measures its neighbours too; this says by how much. Own
    CPU time counts this process and the children it has waited for (and theirs). Linux only.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except (OSError, ValueError):
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        own = os.times()
        mine = own.user + own.system + own.children_user + own.children_system
        return time.perf_counter(), busy, mine

    def cpus(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        wall, busy, mine = (b - a for a, b in zip(self.start, end, strict=True))
        return max(0.0, (busy - mine) / wall)


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures between machines."""
    import open_clip
    import PIL
    import torch

    from mkt_tag.devices import cpu_has_bf16

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_bf16": cpu_has_bf16(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "open_clip": open_clip.__version__,
        "pillow": PIL.__version__,
    }
