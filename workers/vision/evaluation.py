"""Scores of a classifier on held-out images: accuracy, precision/recall/F1 per class, confusion matrix, and
the misclassified images with thumbnails."""


def evaluate(predicted: list[int], actual: list[int], classes: list[str]) -> dict:
    """``confusion_matrix[i][j]``: images of class i predicted as class j (rows: truth, in ``classes``'
    order). Precision, recall and F1 are 0 for a class with nothing to divide by; ``macro_f1`` is their
    mean over the classes."""
    size = len(classes)
    confusion = [[0] * size for _ in range(size)]
    for guess, truth in zip(predicted, actual, strict=True):
        confusion[truth][guess] += 1
    per_class = []
    for index, label in enumerate(classes):
        hits = confusion[index][index]
        said = sum(row[index] for row in confusion)
        there = sum(confusion[index])
        precision = hits / said if said else 0.0
        recall = hits / there if there else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append(
            {
                "label": label,
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "f1": round(f1, 4),
                "support": there,
            }
        )
    total = len(actual)
    correct = sum(confusion[i][i] for i in range(size))
    return {
        "images": total,
        "accuracy": round(correct / total, 4) if total else 0.0,
        "macro_f1": round(sum(c["f1"] for c in per_class) / size, 4) if size else 0.0,
        "classes": list(classes),
        "per_class": per_class,
        "confusion_matrix": confusion,
    }


MISCLASSIFIED_KEPT = 24  # the most confident mistakes shown on the evaluation
THUMBNAIL_SIZE = 64  # pixels, square, like a dataset report's thumbnails


def misclassified_save(
    probabilities, actual: list[int], names: list[str], classes: list[str], *, out_dir: str, archive_path: str,
    archive_name: str, limit: int = MISCLASSIFIED_KEPT,
) -> list[dict]:
    """The held-out images the classifier got wrong, most confident mistakes first (``limit`` of them), each
    with a JPEG thumbnail read again from the archive into ``out_dir``: ``[{"image", "true", "predicted",
    "score", "file"}]`` (``score``: the probability it gave the wrong class; ``file``: the thumbnail's name
    in ``out_dir``). ``probabilities`` is N × classes, in the order of ``actual`` and ``names``."""
    from pathlib import Path

    from PIL import Image

    from workers.vision.data import images_load

    scores, guessed = probabilities.max(dim=1)
    wrong = [i for i, truth in enumerate(actual) if int(guessed[i]) != truth]
    wrong = sorted(wrong, key=lambda i: -float(scores[i]))[:limit]
    if not wrong:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pixels = images_load(archive_path, archive_name, [names[i] for i in wrong], THUMBNAIL_SIZE)
    kept = []
    for position, index in enumerate(wrong):
        file = f"{position:03d}.jpg"
        Image.fromarray(pixels[position].permute(1, 2, 0).numpy()).save(out / file, "JPEG", quality=85)
        kept.append({"image": names[index], "true": classes[actual[index]], "predicted": classes[int(guessed[index])],
                     "score": round(float(scores[index]), 4), "file": file})
    return kept
