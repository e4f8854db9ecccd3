"""Keyword fields and mkt-tag's share of them (keywords.py), on hand-made field contents.

Fields are written as the photo managers in docs/photo-managers.md write them: ``dc:subject``
flat, ``lr:hierarchicalSubject`` with ``|``, ``digiKam:TagsList`` with ``/``.
"""

from __future__ import annotations

import random

import pytest

from mkt_tag.keywords import (
    HIERARCHICAL,
    SUBJECT,
    TAGS_LIST,
    XMP_FIELDS,
    Fields,
    Ownership,
    add_tags,
    label_path,
    leaf,
    person_paths,
    without_owned,
)


def fields(
    subject: list[str] | None = None,
    hierarchical: list[str] | None = None,
    tags_list: list[str] | None = None,
) -> Fields:
    return {SUBJECT: subject or [], HIERARCHICAL: hierarchical or [], TAGS_LIST: tags_list or []}


# What the exiftool fixture (tests/data/library/exiftool.jpg.xmp) holds: no TagsList.
EXIFTOOL = fields(["holiday", "Paris"], ["holiday", "places|France|Paris"])


def test_label_path_and_leaf() -> None:
    assert label_path("animal/dog/chihuahua") == ("animal", "dog", "chihuahua")
    assert label_path(" animal / dog ") == ("animal", "dog")
    assert label_path("animal//dog/") == ("animal", "dog")  # empty levels do not count
    assert label_path("traffic light") == ("traffic light",)
    assert label_path(" dog ") == ("dog",)
    assert leaf("animal/dog/chihuahua") == "chihuahua" and leaf("dog") == "dog"


def test_new_fields_hold_mkt_tags_tags_as_its_own() -> None:
    result, owned = add_tags(fields(), Ownership(), ["dog", "beach"])
    assert result == fields(["dog", "beach"], ["dog", "beach"], ["dog", "beach"])
    assert owned.added == result and owned.copied == {}


def test_the_persons_keywords_come_first_and_are_copied_where_a_field_lacks_them() -> None:
    result, owned = add_tags(EXIFTOOL, Ownership(), ["dog"])
    assert result == {
        SUBJECT: ["holiday", "Paris", "dog"],
        HIERARCHICAL: ["holiday", "places|France|Paris", "dog"],
        TAGS_LIST: ["holiday", "places/France/Paris", "dog"],
    }
    # The copies and mkt-tag's own tags are recorded apart: a copy is the person's keyword.
    assert owned.copied == {TAGS_LIST: ["holiday", "places/France/Paris"]}
    assert owned.added == {SUBJECT: ["dog"], HIERARCHICAL: ["dog"], TAGS_LIST: ["dog"]}


def test_flat_keywords_alone_are_copied_into_the_hierarchical_fields() -> None:
    result, owned = add_tags(fields(["holiday", "Anna"]), Ownership(), ["dog"])
    assert result[HIERARCHICAL] == ["holiday", "Anna", "dog"]
    assert result[TAGS_LIST] == ["holiday", "Anna", "dog"]
    assert owned.copied == {HIERARCHICAL: ["holiday", "Anna"], TAGS_LIST: ["holiday", "Anna"]}


def test_the_persons_order_is_kept_whatever_the_scores() -> None:
    person = fields(["zebra", "apple", "Mango"], ["zebra", "apple"], ["Mango", "zebra"])
    result, _ = add_tags(person, Ownership(), ["cat", "aardvark", "bee"])
    for field, entries in person.items():
        assert result[field][: len(entries)] == entries
    assert result[SUBJECT][3:] == ["cat", "aardvark", "bee"]  # mkt-tag's, in the given order


def test_case_and_space_variants_of_a_keyword_are_not_added_again() -> None:
    person = fields(["Dog", "beach  house"], ["Dog", "beach  house"], ["Dog", "beach  house"])
    result, owned = add_tags(person, Ownership(), ["dog", "Beach House", "cat"])
    assert result == fields(
        ["Dog", "beach  house", "cat"],
        ["Dog", "beach  house", "cat"],
        ["Dog", "beach  house", "cat"],
    )
    assert owned.added == {SUBJECT: ["cat"], HIERARCHICAL: ["cat"], TAGS_LIST: ["cat"]}


def test_the_persons_dog_is_never_claimed_as_mkt_tags() -> None:
    person = fields(["dog", "holiday"], ["holiday", "dog"])
    result, owned = add_tags(person, Ownership(), ["dog"])
    assert owned.added == {}  # in TagsList, dog is the person's, copied
    assert owned.copied == {TAGS_LIST: ["holiday", "dog"]}
    # Untagging leaves the person's dog; so does re-tagging with other labels.
    assert without_owned(result, owned) == person
    retagged, owned = add_tags(result, owned, ["cat"])
    assert retagged[SUBJECT] == ["dog", "holiday", "cat"]
    assert add_tags(retagged, owned, []) == (person, Ownership())


def test_hierarchical_labels_and_ancestors_as_flat_keywords() -> None:
    result, owned = add_tags(fields(), Ownership(), ["animal/dog/chihuahua", "animal/cat"])
    assert result == fields(
        ["animal", "dog", "chihuahua", "cat"],
        ["animal|dog|chihuahua", "animal|cat"],
        ["animal/dog/chihuahua", "animal/cat"],
    )
    assert owned.added == result


@pytest.mark.parametrize(
    ("root", "prefix"), [("auto", ("auto",)), ("auto/mkt", ("auto", "mkt")), ("  ", ())]
)
def test_a_tag_root_goes_only_into_the_hierarchical_fields(
    root: str, prefix: tuple[str, ...]
) -> None:
    result, _ = add_tags(EXIFTOOL, Ownership(), ["animal/dog", "sunset"], root=root)
    assert result[SUBJECT] == ["holiday", "Paris", "animal", "dog", "sunset"]
    ours = [(*prefix, "animal", "dog"), (*prefix, "sunset")]
    assert result[HIERARCHICAL] == ["holiday", "places|France|Paris", *map("|".join, ours)]
    assert result[TAGS_LIST] == ["holiday", "places/France/Paris", *map("/".join, ours)]


def test_the_persons_path_is_not_added_twice_under_another_separator() -> None:
    person = fields(["dog"], ["animal|dog"])
    result, owned = add_tags(person, Ownership(), ["animal/dog"])
    assert result == fields(["dog", "animal"], ["animal|dog"], ["animal/dog"])
    assert owned.added == {SUBJECT: ["animal"]}
    assert owned.copied == {TAGS_LIST: ["animal/dog"]}


def test_person_paths() -> None:
    digikam = fields(
        ["Anna", "holiday", "Paris"],
        ["People|Anna", "holiday", "Places|France|Paris"],
        ["People/Anna", "holiday", "Places/France/Paris"],
    )
    assert person_paths(digikam) == [
        ("People", "Anna"),
        ("holiday",),
        ("Places", "France", "Paris"),
    ]
    # darktable: every level of every path in dc:subject, sorted; none is repeated alone.
    darktable = fields(
        ["France", "Paris", "darktable", "format", "holiday", "jpg", "places"],
        ["darktable|format|jpg", "holiday", "places|France|Paris"],
    )
    assert person_paths(darktable) == [
        ("darktable", "format", "jpg"),
        ("holiday",),
        ("places", "France", "Paris"),
    ]
    # A flat keyword that is no level of a path is a path of its own; the first spelling wins.
    assert person_paths(fields(["sea", "SEA", "Anna"], ["People | Anna"])) == [
        ("People", "Anna"),
        ("sea",),
    ]
    assert person_paths(fields()) == []


def test_retagging_replaces_only_mkt_tags_entries() -> None:
    first, owned = add_tags(EXIFTOOL, Ownership(), ["dog", "cat"])
    second, owned = add_tags(first, owned, ["beach"])
    assert second == {
        SUBJECT: ["holiday", "Paris", "beach"],
        HIERARCHICAL: ["holiday", "places|France|Paris", "beach"],
        TAGS_LIST: ["holiday", "places/France/Paris", "beach"],
    }
    assert owned.copied == {TAGS_LIST: ["holiday", "places/France/Paris"]}


def test_no_labels_gives_the_fields_as_they_were() -> None:
    tagged, owned = add_tags(EXIFTOOL, Ownership(), ["dog"], root="auto")
    assert add_tags(tagged, owned, []) == (EXIFTOOL, Ownership())
    assert without_owned(tagged, owned) == EXIFTOOL


def test_a_copy_stays_when_the_person_added_to_that_field_since() -> None:
    tagged, owned = add_tags(EXIFTOOL, Ownership(), ["dog"])
    # digiKam rewrites TagsList whole: the copies are now its own, beside a new tag.
    edited = {**tagged, TAGS_LIST: [*tagged[TAGS_LIST], "People/Anna"]}
    assert without_owned(edited, owned)[TAGS_LIST] == [
        "holiday",
        "places/France/Paris",
        "People/Anna",
    ]
    # The same field with only the copies left (the person removed mkt-tag's dog) goes.
    only_copies = {**tagged, TAGS_LIST: ["places/France/Paris", "holiday"]}
    assert without_owned(only_copies, owned)[TAGS_LIST] == []


# --- round trips over random field contents ---------------------------------------------

WORDS = ["dog", "cat", "holiday", "Paris", "France", "places", "sea", "Anna", "People", "jpg"]
LABELS = ["dog", "Cat", "beach", "HOLIDAY", "animal/dog", "animal/cat", "places/France", "sea"]


def managers_fields(rng: random.Random) -> Fields:
    """The keyword fields a manager writes for some paths a person assigned: each field is
    absent or holds every path, as digiKam (leaves), Lightroom (leaves and their ancestors)
    or darktable (every level, sorted) writes dc:subject; in any order and case."""
    paths = [tuple(rng.sample(WORDS, rng.randint(1, 3))) for _ in range(rng.randint(0, 4))]
    paths = list({tuple(map(str.casefold, path)): path for path in paths}.values())
    if rng.random() < 0.5:
        spell = rng.choice([str.upper, str.lower, str.title])
        paths = [tuple(spell(level) for level in path) for path in paths]
    subject = rng.choice(
        [
            [path[-1] for path in paths],
            [level for path in paths for level in path],
            sorted({level for path in paths for level in path}),
        ]
    )
    result = {
        SUBJECT: list({level.casefold(): level for level in subject}.values()),
        HIERARCHICAL: ["|".join(path) for path in paths],
        TAGS_LIST: ["/".join(path) for path in paths],
    }
    for entries in result.values():
        rng.shuffle(entries)
    for field in rng.sample(XMP_FIELDS, rng.randint(0, 2)):
        result[field] = []
    return result


def random_fields(rng: random.Random) -> Fields:
    """Any keyword fields, each field holding keywords the others may lack."""
    result: Fields = {}
    for field in XMP_FIELDS:
        entries: list[str] = []
        for _ in range(rng.choice([0, 0, 1, 2, 4])):
            path = rng.sample(WORDS, rng.randint(1, 3 if field.separator else 1))
            entry = (field.separator or "").join(path)
            if entry.casefold() not in map(str.casefold, entries):
                entries.append(entry)
        result[field] = entries
    return result


def test_untag_round_trip_restores_the_fields_exactly() -> None:
    rng = random.Random(14)
    for _ in range(500):
        person = managers_fields(rng)
        root = rng.choice([None, "auto", "mkt/auto"])
        labels = rng.sample(LABELS, rng.randint(1, 4))
        tagged, owned = add_tags(person, Ownership(), labels, root)
        for field in XMP_FIELDS:
            copied, added = owned.copied.get(field, []), owned.added.get(field, [])
            assert tagged[field] == person[field] + copied + added  # theirs first, in order
            keys = [entry.casefold() for entry in tagged[field]]
            assert len(keys) == len(set(keys))  # nothing twice
            for path in person_paths(person):  # every field holds every keyword
                wanted = field.separator.join(path) if field.separator else path[-1]
                assert wanted.casefold() in keys, (person, field)
            assert copied == [] or person[field] == []  # copies go where the field was empty
        assert without_owned(tagged, owned) == person, person
        # Re-tagging with other labels, then untagging, gives the person's fields again.
        retagged, owned = add_tags(tagged, owned, rng.sample(LABELS, 2), root)
        assert without_owned(retagged, owned) == person, person
        assert add_tags(retagged, owned, []) == (person, Ownership())


def test_untag_never_removes_or_reorders_what_a_field_held() -> None:
    rng = random.Random(7)
    for _ in range(500):
        person = random_fields(rng)
        labels = rng.sample(LABELS, rng.randint(1, 4))
        tagged, owned = add_tags(person, Ownership(), labels, rng.choice([None, "auto"]))
        untagged = without_owned(tagged, owned)
        for field in XMP_FIELDS:
            assert tagged[field][: len(person[field])] == person[field]
            assert untagged[field][: len(person[field])] == person[field], (person, field)
            ours = {entry.casefold() for entry in owned.added.get(field, [])}
            assert not ours & {entry.casefold() for entry in untagged[field]}
            if field not in owned.copied:
                assert untagged[field] == person[field]


def test_untag_removes_a_copy_from_a_field_that_held_other_keywords() -> None:
    # Lightroom exports a keyword's synonym (Paname for Paris) to dc:subject only.
    lightroom = fields(["France", "Paris", "Paname", "Places"], ["Places|France|Paris"])
    tagged, owned = add_tags(lightroom, Ownership(), ["dog"])
    assert without_owned(tagged, owned) == lightroom


def test_a_level_holding_the_other_separator_stays_one_level() -> None:
    # A band named AC/DC, filed by Lightroom under music; Immich reads TagsList by splitting
    # on "/" and writes a "/" inside a level as "|" (docs/photo-managers.md, Immich).
    tagged, _ = add_tags(fields(["AC/DC"], ["music|AC/DC"]), Ownership(), ["dog"])
    copies = tagged[TAGS_LIST][:-1]
    assert [entry.split("/") for entry in copies] != [["music", "AC", "DC"]]


def test_spaces_around_separators_make_no_new_keyword() -> None:
    person = fields([], ["animal | dog"])
    tagged, owned = add_tags(person, Ownership(), ["animal/dog"])
    assert tagged[HIERARCHICAL] == ["animal | dog"] and HIERARCHICAL not in owned.added
    assert tagged[TAGS_LIST] == ["animal/dog"]  # copied where there was nothing
    assert without_owned(tagged, owned) == person
