import io
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from invrev.data import DataError, Problem, load_exemplars, natural_key, to_rgb, to_tensor, write_exemplars

torch.set_num_threads(1)

TEMPLATES = ["cat {} stone", "a cat {} a rock"]


def solid(color, size=(8, 6), mode="RGB"):
    return Image.new(mode, size, color)


def make_folder(path, n=2, templates=None):
    """A valid relation folder with n JPEGs and text.json."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        solid((40 * i, 100, 200)).save(path / f"{i}.jpg")
    text = templates if templates is not None else {f"{i}.jpg": TEMPLATES for i in range(n)}
    (path / "text.json").write_text(json.dumps(text))
    return path


def problems_of(folder):
    with pytest.raises(DataError) as info:
        load_exemplars(folder)
    return info.value


def test_valid_folder_loads(tmp_path):
    folder = make_folder(tmp_path / "inside", n=3)
    ex = load_exemplars(folder)
    assert ex.relation == "inside" and ex.root == folder and len(ex) == 3
    assert ex.names == ("0.jpg", "1.jpg", "2.jpg")
    assert ex.templates == (tuple(TEMPLATES),) * 3
    assert all(im.mode == "RGB" and im.size == (8, 6) for im in ex.images)
    assert set(ex.checksums) == {"0.jpg", "1.jpg", "2.jpg", "text.json"}
    import hashlib

    assert ex.checksums["text.json"] == hashlib.sha256((folder / "text.json").read_bytes()).hexdigest()


def test_broken_image_is_a_problem_not_a_crash(tmp_path):
    folder = make_folder(tmp_path / "on")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    (folder / "1.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    err = problems_of(folder)
    assert [p.path for p in err.problems] == [str(folder / "1.jpg")]
    assert "cannot be opened as an image" in str(err)
    assert "re-export it, or remove it and its key from text.json" in str(err)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"0.jpg": ["cat {} stone"],\n "1.jpg": ["a {} b"] "x": 1}', "invalid JSON at line 2 column"),
        ('["cat {} stone"]', "top level is a JSON array, not an object"),
        ('{"0.jpg": "cat {} stone", "1.jpg": ["a {} b"]}', 'value of "0.jpg" is a JSON string, not an array'),
        ('{"0.jpg": [], "1.jpg": ["a {} b"]}', '"0.jpg" has an empty template list'),
        ('{"0.jpg": ["cat stone"], "1.jpg": ["a {} b"]}', '"0.jpg" template 0: "cat stone" has 0 "{}" (needs exactly 1)'),
        ('{"0.jpg": ["a {} b {} c"], "1.jpg": ["a {} b"]}', '"0.jpg" template 0: "a {} b {} c" has 2 "{}"'),
        ('{"0.jpg": [" {} "], "1.jpg": ["a {} b"]}', 'has no text beside "{}"'),
        ('{"0.jpg": ["a {} b", 3], "1.jpg": ["a {} b"]}', '"0.jpg" template 1: 3 is a JSON number, not a string'),
        ('{"0.jpg": ["a {} b"], "0.jpg": ["c {} d"], "1.jpg": ["a {} b"]}', 'key "0.jpg" appears more than once'),
    ],
)
def test_bad_text_json_names_the_file_and_the_fix(tmp_path, text, expected):
    folder = make_folder(tmp_path / "hug")
    (folder / "text.json").write_text(text)
    err = problems_of(folder)
    assert expected in str(err)
    assert all(p.path == str(folder / "text.json") and p.fix for p in err.problems)
    assert all(str(p) in str(err) for p in err.problems)


def test_missing_and_stray_keys(tmp_path):
    folder = make_folder(tmp_path / "on", n=2, templates={"0.jpg": TEMPLATES, "7.jpg": TEMPLATES, "1.JPG": TEMPLATES})
    err = problems_of(folder)
    by_path = {}
    for p in err.problems:
        by_path.setdefault(p.path, []).append(p)
    assert "has no key in text.json" in by_path[str(folder / "1.jpg")][0].message
    assert 'add "1.jpg"' in by_path[str(folder / "1.jpg")][0].fix
    stray = {p.message: p.fix for p in by_path[str(folder / "text.json")]}
    assert stray['stray key "7.jpg" names no image in the folder'] == "remove the key, or add the image to the folder"
    assert "rename the key to \"1.jpg\"" in stray['stray key "1.JPG" names no image in the folder']


def test_all_problems_are_reported_at_once(tmp_path):
    folder = make_folder(tmp_path / "ride_on", n=3, templates={"0.jpg": ["x {} {} y"], "9.jpg": TEMPLATES})
    (folder / "1.jpg").write_bytes(b"not an image")
    err = problems_of(folder)
    messages = str(err).splitlines()
    assert messages[0] == "5 problems with the exemplar data:"
    assert len(err.problems) == 5  # bad template, stray 9.jpg, no key for 1.jpg and 2.jpg, broken 1.jpg
    assert sum(str(folder / "1.jpg") in line for line in messages) == 2
    assert pickle.loads(pickle.dumps(err)).problems == err.problems


def test_missing_folder_text_json_and_images(tmp_path):
    assert "is not a folder" in str(problems_of(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    err = problems_of(tmp_path / "empty")
    assert {p.message for p in err.problems} == {"contains no images", "missing"}
    assert err.problems[1] == Problem(
        str(tmp_path / "empty" / "text.json"), "missing", 'create it: {"0.jpg": ["<entity A> {} <entity B>", ...], ...}'
    )


def write_png(folder, name, image, **kwargs):
    image.save(folder / name, **kwargs)


def test_modes_become_rgb_with_sensible_values(tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    rgba = Image.new("RGBA", (2, 1))
    rgba.putdata([(255, 0, 0, 0), (255, 0, 0, 255)])
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (0, 255)])
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putdata([0, 1])
    deep = Image.fromarray(np.array([[65535, 32896, 0]], dtype=np.uint16))
    assert deep.mode == "I;16"
    images = {
        "rgba.png": (rgba, {}),
        "la.png": (la, {}),
        "l.png": (Image.new("L", (2, 1), 128), {}),
        "p.png": (palette, {}),
        "p_transparent.png": (palette, {"transparency": 0}),
        "i16.png": (deep, {}),
        "cmyk.jpg": (Image.new("CMYK", (2, 1), (255, 0, 0, 0)), {"quality": 100}),
    }
    for name, (image, kwargs) in images.items():
        image.save(folder / name, **kwargs)
    (folder / "text.json").write_text(json.dumps({name: TEMPLATES for name in images}))
    ex = load_exemplars(folder)
    px = {name: [im.getpixel((x, 0)) for x in range(im.width)] for name, im in zip(ex.names, ex.images)}
    assert all(im.mode == "RGB" for im in ex.images)
    assert px["rgba.png"] == [(255, 255, 255), (255, 0, 0)]  # transparent over white, not black
    assert px["la.png"] == [(255, 255, 255), (0, 0, 0)]
    assert px["l.png"] == [(128, 128, 128)] * 2
    assert px["p.png"] == [(0, 0, 0), (0, 255, 0)]
    assert px["p_transparent.png"] == [(255, 255, 255), (0, 255, 0)]
    assert px["i16.png"] == [(255,) * 3, (128,) * 3, (0,) * 3]  # scaled by 255/65535, not clipped
    r, g, b = px["cmyk.jpg"][0]
    assert r < 10 and g > 245 and b > 245  # full cyan


def test_16_bit_mode_i_is_scaled_not_clipped():
    assert to_rgb(Image.fromarray(np.array([[65535, 1000]], dtype=np.int32))).getpixel((1, 0)) == (4, 4, 4)


def test_exif_rotation_is_applied(tmp_path):
    folder = tmp_path / "rotated"
    folder.mkdir()
    image = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": phones store landscape pixels with this tag
    image.save(folder / "0.jpg", exif=exif)
    (folder / "text.json").write_text(json.dumps({"0.jpg": TEMPLATES}))
    assert load_exemplars(folder).images[0].size == (20, 40)


def test_natural_sort(tmp_path):
    names = ["10.jpg", "2.jpg", "1.png", "0.jpg", "11.JPEG"]
    folder = make_folder(tmp_path / "order", n=0, templates={n: TEMPLATES for n in names})
    for name in names:
        solid((1, 2, 3)).save(folder / name, format="PNG" if name.endswith("png") else "JPEG")
    (folder / "notes.txt").write_text("ignored: not an image")
    assert load_exemplars(folder).names == ("0.jpg", "1.png", "2.jpg", "10.jpg", "11.JPEG")
    assert sorted(["b10", "b9", "a"], key=natural_key) == ["a", "b9", "b10"]


def red_green_blue(width=60, height=20):
    """Left third red, middle green, right third blue: a crop would lose an edge, a flip swaps them."""
    a = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    a[:, :third, 0] = a[:, third : 2 * third, 1] = a[:, 2 * third :, 2] = 255
    return Image.fromarray(a)


def test_resize_squashes_without_crop_or_flip(tmp_path):
    folder = tmp_path / "left_of"
    write_exemplars(folder, [red_green_blue()], [TEMPLATES])
    image = load_exemplars(folder, resolution=15).images[0]
    assert image.size == (15, 15)
    assert image.getpixel((0, 7)) == (255, 0, 0)
    assert image.getpixel((7, 7)) == (0, 255, 0)
    assert image.getpixel((14, 7)) == (0, 0, 255)


def test_to_tensor_shape_range_and_orientation():
    batch = to_tensor([red_green_blue(), Image.new("L", (5, 9), 0)], resolution=15)
    assert batch.shape == (2, 3, 15, 15) and batch.dtype == torch.float32
    assert batch.min() == -1.0 and batch.max() == 1.0
    assert batch[0, :, 7, 0].tolist() == [1.0, -1.0, -1.0]
    assert batch[0, :, 7, 14].tolist() == [-1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match="positive int"):
        to_tensor([red_green_blue()], resolution=0)


def test_write_exemplars_round_trip(tmp_path):
    folder = tmp_path / "synthetic" / "on"
    array = np.full((6, 4, 3), (10, 20, 30), np.uint8)
    write_exemplars(folder, [array, solid((1, 2, 3)).convert("RGBA")], [["a {} b"], ["c {} d", "{} e"]])
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png", "text.json"]
    ex = load_exemplars(folder)
    assert ex.templates == (("a {} b",), ("c {} d", "{} e"))
    assert np.array_equal(np.asarray(ex.images[0]), array)  # PNG: lossless
    with pytest.raises(DataError, match=r'templates\[0\]: template 0: "a b" has 0'):
        write_exemplars(tmp_path / "bad", [array], [["a b"]])
    (folder / "7.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds other images"):
        write_exemplars(folder, [array], [["a {} b"]])
