"""Where a run's tags go, and whether the ones already there are current: the results
file's rows, per-image sidecars, and keywords inside the image files (``--embed``).

An image is current when every output it gets holds this run's tags (``records``): a row
of the same run, a sidecar and a file whose mkt-tag record names it. Otherwise it is stale
(some output holds another run's tags, or tags of no known run) or new (none of its outputs
holds mkt-tag's tags yet). Judging needs the run's identity, which means finding the
model's files; that is done only when some output exists to judge. Images given by URI
(``remote.RemoteImage``) have a row in the results file and no other output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mkt_tag.errors import OutputError
from mkt_tag.records import ANONYMOUS_RUN, CURRENT, NEW, STALE, RunIdentity
from mkt_tag.remote import ImagePath
from mkt_tag.results import ResultsFile, TagResult, image_key
from mkt_tag.sidecar_paths import sidecar_collisions, sidecar_path
from mkt_tag.sidecars import rejected_labels, sidecar_state, write_sidecar

if TYPE_CHECKING:  # exiftool: needed only by runs that embed
    from mkt_tag.embedded import EmbedChange, EmbeddedMetadata


class SharedSidecarError(OutputError):
    """Two images would write the same sidecar (``--sidecar-naming stem``)."""


def shared_sidecars(
    images: list[ImagePath], sidecar: str | None, naming: str
) -> dict[ImagePath, SharedSidecarError]:
    """The images whose sidecar another image would write too, each with its error."""
    if sidecar is None:
        return {}
    local = [image for image in images if isinstance(image, Path)]
    return {
        image: SharedSidecarError(
            f"{image}: its sidecar {sidecar_path(image, sidecar, naming).name} would also be "
            f"that of {', '.join(map(str, others))}; neither is written: rename one, or use "
            "--sidecar-naming full"
        )
        for image, others in sidecar_collisions(local, sidecar, naming).items()
    }


@dataclass
class Outputs:
    """The outputs of one run, open while it runs."""

    results: ResultsFile | None = None  # the combined results file, locked for this run
    sidecar: str | None = None  # json, txt or xmp
    sidecar_naming: str = "full"
    embedded: EmbeddedMetadata | None = None  # keywords inside the files, with --embed
    # the run's identity, or a function that finds it (called once, when first needed)
    run: RunIdentity | Callable[[], RunIdentity] | None = None
    tag_root: str = ""
    keep: bool = False  # keep mkt-tag's earlier tags beside the new ones (--append)
    dry_run: bool = False  # write nothing; record what embedding would change
    changes: list[EmbedChange] = field(default_factory=list)  # with dry_run: each file's

    @property
    def any(self) -> bool:
        return self.results is not None or self.sidecar is not None or self.embedded is not None

    def identity(self) -> RunIdentity | None:
        """The run's identity, found once (a model's files may have to be found for it)."""
        if callable(self.run):
            self.run = self.run()
        return self.run

    def states(self, images: list[ImagePath]) -> dict[ImagePath, str]:
        """Each image: CURRENT when all its outputs hold this run's tags, STALE when some
        holds another run's, else NEW."""
        if not self.any:
            return dict.fromkeys(images, NEW)
        done = self.results.done() if self.results is not None else {}
        run = self.identity() if self._any_output(images, done) else None
        judge = run or ANONYMOUS_RUN  # nothing can be current for an unknown run
        found: dict[ImagePath, list[str]] = {image: [] for image in images}
        for image in images:
            if self.results is not None:
                row = done.get(image_key(image))
                current = row is not None and run is not None and row.run == run.fingerprint
                found[image].append(NEW if row is None else CURRENT if current else STALE)
            if self.sidecar is not None and isinstance(image, Path):
                state = sidecar_state(
                    image, self.sidecar, self.sidecar_naming, judge, self.tag_root
                )
                found[image].append(STALE if run is None and state == CURRENT else state)
        if self.embedded is not None:
            embeddable = [i for i in images if isinstance(i, Path) and self._embeds(i)]
            for image, state in zip(
                embeddable, self.embedded.states(embeddable, judge, self.tag_root), strict=True
            ):
                found[image].append(STALE if run is None and state == CURRENT else state)
        return {image: _combined(states) for image, states in found.items()}

    def _any_output(self, images: list[ImagePath], done: dict[str, TagResult]) -> bool:
        if done or self.embedded is not None:  # files: their records are read anyway
            return True
        if self.sidecar is None:
            return False
        return any(
            sidecar_path(image, self.sidecar, self.sidecar_naming).exists()
            for image in images
            if isinstance(image, Path)
        )

    def _embeds(self, image: Path) -> bool:
        """Whether keywords go into ``image`` itself: camera raw files (and others mkt-tag
        cannot write into) keep theirs in the sidecar when there is one."""
        from mkt_tag.embedded import embed_refusal

        return self.embedded is not None and embed_refusal(image) is None

    def refusals(self, images: list[ImagePath]) -> dict[ImagePath, OutputError]:
        """Images whose only output would be keywords inside a file that cannot take them."""
        if self.embedded is None or self.sidecar is not None or self.results is not None:
            return {}
        from mkt_tag.embedded import embed_refusal

        return {
            image: OutputError(f"{image}: {reason}")
            for image in images
            if isinstance(image, Path) and (reason := embed_refusal(image)) is not None
        }

    def write(self, result: TagResult) -> list[str]:
        """Write one image's tags to its sidecar and into the file; return warnings.

        Raises:
            MktTagError: an output cannot be written (the image fails, the run goes on).
        """
        run = self.identity()
        if run is not None:
            result.run = run.fingerprint
        image = result.path
        if not isinstance(image, Path):  # a URI: its row is its only output
            return []
        if self.sidecar is not None and not self.dry_run:
            write_sidecar(
                image,
                result.tags,
                self.sidecar,
                self.sidecar_naming,
                run,
                self.tag_root,
                keep=self.keep,
            )
        if self.embedded is None or not self._embeds(image):
            return []
        # A review applied to the photo's sidecar: its rejections hold inside the file too.
        rejected = rejected_labels(image)
        change = self.embedded.write(
            image,
            result.tags,
            run or ANONYMOUS_RUN,
            self.tag_root,
            self.keep,
            self.dry_run,
            rejected=rejected,
        )
        if self.dry_run:
            self.changes.append(change)
        return [f"{result.path}: {warning}" for warning in change.warnings]

    def close(self) -> None:
        """Let other runs open the results file; stop exiftool."""
        if self.results is not None:
            self.results.close()
        if self.embedded is not None:
            self.embedded.close()


def _combined(states: list[str]) -> str:
    if states and all(state == CURRENT for state in states):
        return CURRENT
    return STALE if STALE in states else NEW
