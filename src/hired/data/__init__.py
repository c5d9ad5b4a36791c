"""Local data: a seeded generator of high-resolution VQA scenes."""

from hired.data.scenes import generate_scene, make_scenes, sample_scene, scene, split_of, words

__all__ = ["generate_scene", "make_scenes", "sample_scene", "scene", "split_of", "words"]
