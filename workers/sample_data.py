"""Small learnable data sets: classify a sentence as sports, food, weather or music; tell coloured shapes
apart (images).

Used by the tests, the benchmarks and the README's first run; generated, never committed.
"""

import json
import random
from pathlib import Path

TOPICS = {
    "sports": ["team", "match", "goal", "coach", "player", "score", "race", "ball"],
    "food": ["soup", "bread", "cheese", "apple", "dinner", "cake", "rice", "salad"],
    "weather": ["rain", "wind", "snow", "cloud", "storm", "sun", "fog", "heat"],
    "music": ["song", "band", "guitar", "concert", "piano", "drum", "singer", "album"],
}
FRAMES = ["The {a} and the {b} were great.", "I saw the {a} near the {b}.", "A {a} with a {b} today."]


def classification_rows(count: int, *, seed: int = 0, chat: bool = True) -> list[dict]:
    """``count`` rows, cycling through the four labels, as chat or prompt/completion rows."""
    rng = random.Random(seed)
    labels = list(TOPICS)
    rows = []
    for index in range(count):
        label = labels[index % len(labels)]
        a, b = rng.sample(TOPICS[label], 2)
        prompt = "Classify: " + rng.choice(FRAMES).format(a=a, b=b)
        rows.append(_row(prompt, label, chat))
    return rows


def _row(prompt: str, label: str, chat: bool) -> dict:
    if chat:
        return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": label}]}
    return {"prompt": prompt + "\nLabel:", "completion": " " + label}


def classification_write(path: Path, count: int = 48, *, seed: int = 0, chat: bool = True) -> Path:
    """Write ``classification_rows`` as JSONL to ``path``."""
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in classification_rows(count, seed=seed, chat=chat)))
    return path


def tool_call_row(city: str = "Paris") -> dict:
    """A chat row in OpenAI's tool-calling shape: the tools offered, an assistant turn that only
    calls one (arguments as a JSON string), the tool's answer, and the final reply."""
    return {
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "messages": [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": city})}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "assistant", "content": f"It is sunny in {city}."},
        ],
    }


SHAPES = ("circle", "square", "triangle")


def shape_image(shape: str, seed: int, *, size: int = 32) -> bytes:
    """A coloured ``shape`` (circle, square or triangle) of random colour, size and place on a dark,
    noisy background: the class is the shape, never the colour."""
    import io
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(f"{shape}-{seed}")
    cells = size // 4
    noise = Image.frombytes("RGB", (cells, cells), bytes(rng.randrange(60) for _ in range(cells * cells * 3)))
    image = noise.resize((size, size), Image.Resampling.NEAREST)
    side = rng.randrange(size * 3 // 8, size * 5 // 8)
    left, top = rng.randrange(0, size - side), rng.randrange(0, size - side)
    box = (left, top, left + side, top + side)
    colour = tuple(rng.randrange(120, 256) for _ in range(3))
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(left + side // 2, top), (left, top + side), (left + side, top + side)], fill=colour)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def shape_set(per_class: int = 100, *, size: int = 32) -> dict[str, bytes]:
    """``{path: bytes}`` of three class folders (circles/, squares/, triangles/) of ``per_class`` images."""
    return {f"{shape}s/{index:03d}.png": shape_image(shape, index, size=size)
            for shape in SHAPES for index in range(per_class)}
