"""The catalog: a dataset's name, description and tags (finding by them: ``selectors.datasets_filter``)."""

import re

from datasets_app.models import Dataset
from finetune_site.errors import InvalidRequest

NAME_MAX = 200
DESCRIPTION_MAX = 5000
TAGS_MAX = 20
TAG_MAX = 40
# Lower-case letters, digits and - _ . : ; the platform folds case so "Pets" and "pets" are one tag.
_TAG = re.compile(r"^[a-z0-9][a-z0-9._:-]*$")


def dataset_catalog_update(
    *, dataset: Dataset, name: str | None = None, description: str | None = None, tags: list | None = None
) -> Dataset:
    """Set the fields given (``None`` leaves one as it is); a bad value is a 400 naming it, nothing saved."""
    changed = []
    if name is not None:
        dataset.name = _name_clean(name)
        changed.append("name")
    if description is not None:
        dataset.description = _description_clean(description)
        changed.append("description")
    if tags is not None:
        dataset.tags = tags_clean(tags)
        changed.append("tags")
    if changed:
        dataset.save(update_fields=changed)
    return dataset


def _name_clean(name) -> str:
    if not isinstance(name, str) or len(name.strip()) > NAME_MAX:
        raise InvalidRequest(f"name must be text of at most {NAME_MAX} characters", param="name")
    return name.strip()


def _description_clean(description) -> str:
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        raise InvalidRequest(f"description must be text of at most {DESCRIPTION_MAX} characters", param="description")
    return description.strip()


def tags_clean(tags) -> list[str]:
    """Tags lower-cased, in order, each once; anything else is a 400 naming ``tags``."""
    if not isinstance(tags, list):
        raise InvalidRequest('tags must be a list of strings, e.g. ["pets", "v2"]', param="tags")
    if len(tags) > TAGS_MAX:
        raise InvalidRequest(f"tags: at most {TAGS_MAX} tags", param="tags")
    clean: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.match(tag.strip().lower()) or len(tag.strip()) > TAG_MAX:
            raise InvalidRequest(
                f"tags: {tag!r} is not a tag (1 to {TAG_MAX} letters, digits, '-', '_', '.' "
                "or ':', starting with a letter or digit)",
                param="tags",
            )
        if tag.strip().lower() not in clean:
            clean.append(tag.strip().lower())
    return clean
