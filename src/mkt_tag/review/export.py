"""``mkt-tag review --export gallery.html``: a static, read-only gallery to share.

One HTML file, thumbnails embedded as data URIs (about 15 kB a photo), showing each photo's
corrected tags (rejected ones left out, added ones in): it opens in any browser, from a
mail or a USB stick, with no server and no link back to the photos. A small script in the
page filters by label; without JavaScript every photo shows.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from pathlib import Path

from mkt_tag.files import atomic_write_text
from mkt_tag.review.apply import corrected_tags
from mkt_tag.review.corrections import Decisions
from mkt_tag.review.session import Review
from mkt_tag.review.thumbnails import THUMBNAIL, Thumbnails

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1rem;background:#f6f6f4;color:#222}
h1{font-size:1.2rem}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
figure{margin:0;background:#fff;border-radius:6px;padding:8px;box-shadow:0 1px 2px #0002}
img{width:100%;height:180px;object-fit:contain;background:#eee}figcaption{font-size:12px}
.tag{display:inline-block;background:#e4ecf7;border-radius:3px;padding:0 4px;margin:2px}
.reviewed{color:#176b2c;font-weight:600}.name{color:#555;overflow-wrap:anywhere}
"""
_SCRIPT = """
const pick=document.getElementById('label');
pick.addEventListener('change',()=>{for(const f of document.querySelectorAll('figure')){
f.hidden=pick.value!==''&&!f.dataset.labels.split('\\n').includes(pick.value);}});
"""


def export_gallery(
    review: Review,
    thumbnails: Thumbnails,
    path: Path,
    title: str = "mkt-tag gallery",
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write the gallery of every photo of ``review`` to ``path`` (atomically); return how
    many photos it shows (those that could be read as images).

    Raises:
        OutputError: the file cannot be written.
    """
    figures = []
    labels: set[str] = set()
    total = len(review.photos)
    for done, photo in enumerate(review.photos, start=1):
        data = thumbnails.get(photo.id, THUMBNAIL)
        if on_progress is not None:
            on_progress(done, total)
        if data is None:
            continue
        decisions = review.decisions.get(photo.id, Decisions())
        tags = [tag.label for tag in corrected_tags(photo, decisions)]
        labels.update(tags)
        image = base64.b64encode(data).decode("ascii")
        mark = ' <span class="reviewed">reviewed</span>' if decisions.reviewed else ""
        chips = "".join(f'<span class="tag">{html.escape(label)}</span>' for label in tags)
        figures.append(
            f'<figure data-labels="{html.escape(chr(10).join(tags))}">'
            f'<img alt="{html.escape(photo.path.name)}" src="data:image/jpeg;base64,{image}">'
            f'<figcaption><div class="name">{html.escape(photo.path.name)}{mark}</div>'
            f"{chips}</figcaption></figure>"
        )
    options = "".join(
        f'<option value="{html.escape(label)}">{html.escape(label)}</option>'
        for label in sorted(labels, key=str.casefold)
    )
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(figures):,} photos. "
        '<label>Label <select id="label"><option value="">all</option>'
        f'{options}</select></label></p><div class="grid">{"".join(figures)}</div>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
    atomic_write_text(Path(path), page)
    return len(figures)
