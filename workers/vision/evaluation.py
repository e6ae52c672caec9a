"""Scores of a classifier on held-out images: accuracy, precision/recall/F1 per class, confusion matrix."""


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
