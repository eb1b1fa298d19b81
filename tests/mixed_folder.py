"""A newcomer's mixed folder: the real sample photos (tests/real_photos.py), real sounds (pygame-ce's
examples) and notes written about some of the photos' subjects (never naming the photo's file).

    python tests/mixed_folder.py DEST    # writes the folder
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from real_photos import sources

# subject query -> (its photo, its note, the note's text)
SUBJECTS = {
    "a rocket": (
        "rocket.jpg", "launch.txt", "The rocket lifted off from the pad at dawn, trailing smoke and fire into the sky."
    ),
    "a cat": ("cat.png", "pet.txt", "Our cat sleeps on the windowsill all afternoon and ignores everyone."),
    "a motorcycle": (
        "motorcycle.png", "bike.txt", "The motorbike needs new tyres and an oil change before the summer ride."
    ),
    "a cup of coffee": (
        "coffee.png", "espresso.txt", "Espresso beans from the market taste better than the supermarket ones."
    ),
    "flowers": (
        "flower.jpg", "garden.txt", "Planted tulips and roses along the fence; the lawn needs mowing next week."
    ),
}  # fmt: skip
OTHER_NOTES = {
    "recipe.txt": "Pancakes: two eggs, a cup of flour, milk, a pinch of salt. Fry in butter.",
    "meeting.txt": "Minutes of the budget meeting: the committee approved the new spending plan.",
    "trip.txt": "Train to the mountains on Friday, hiking on Saturday, back home on Sunday night.",
}
SOUNDS = ("boom.wav", "car_door.wav", "whiff.wav", "punch.wav")


def write(dest: Path) -> Path:
    spec = importlib.util.find_spec("pygame")
    assert spec is not None and spec.submodule_search_locations, "pip install pygame-ce (test sounds)"
    pygame_data = Path(spec.submodule_search_locations[0]) / "examples" / "data"
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in sources().items():
        shutil.copyfile(src, dest / name)
    for _, note, text in SUBJECTS.values():
        (dest / note).write_text(text, encoding="utf-8")
    for note, text in OTHER_NOTES.items():
        (dest / note).write_text(text, encoding="utf-8")
    for name in SOUNDS:
        shutil.copyfile(pygame_data / name, dest / name)
    return dest


if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
