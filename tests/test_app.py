"""`segdino app` through its own HTTP API (the Gradio client), against a server this module
starts on a free port with a tiny random model: masks equal `Predictor`'s, bad files are one
line on the page while the server keeps serving, a report is paged through worst first, and
a corrected mask is saved without overwriting.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from PIL import Image

from segdino.backbone import load_backbone
from segdino.checkpoints.format import save_segdino
from segdino.commands import main
from segdino.data.dataset import find_pairs
from segdino.data.synthetic import make_synthetic_dataset
from segdino.errors import UserError
from segdino.evaluation import evaluate
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO
from segdino.picture_files import save_jpeg

pytest.importorskip("gradio", reason="segdino[app] is not installed")
from gradio_client import Client, handle_file  # noqa: E402

from segdino.app.correct import painted_mask, save_correction, starting_layer  # noqa: E402
from segdino.app.model import load_predictor  # noqa: E402
from segdino.app.page import build_page, serve  # noqa: E402
from segdino.app.segment import HEAT_MAP, Segmented, render  # noqa: E402

THRESHOLD = 0.47  # the tiny random model's: masks that overlap the truth, Dice all different


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory) -> dict:
    """A tiny random model saved as a checkpoint, a synthetic dataset, a test report of it,
    and the app serving them; `url`, `ckpt`, `data` (the dataset) and `report`."""
    root = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    model = SegDINO(load_backbone(FIXTURES / "dinov3" / "tiny_mlp.pth"))
    model.preprocessing.input_size = (32, 32)
    model.preprocessing.threshold = THRESHOLD
    save_segdino(model, root / "tiny.safetensors", FIXTURES / "dinov3" / "tiny_mlp.pth")
    data = make_synthetic_dataset(root / "data" / "synth", n_train=2, n_val=1, n_test=3,
                                  size=(40, 56), seed=2)
    predictor = load_predictor(str(root / "tiny.safetensors"))
    evaluate(predictor, find_pairs(data / "test"), root / "report", num_workers=0,
             progress=False)
    page = build_page(predictor, data)
    url = serve(page, port=free_port(), block=False)
    yield {"url": url, "ckpt": root / "tiny.safetensors", "data": data,
           "report": root / "report"}
    page.close()


@pytest.fixture(scope="module")
def client(app_server: dict) -> Client:
    return Client(app_server["url"], verbose=False)


def test_uploaded_images_give_predictors_masks(app_server: dict, client: Client) -> None:
    images = sorted((app_server["data"] / "test" / "image").iterdir())[:2]
    gallery, summary, problems = client.predict([handle_file(str(p)) for p in images], "",
                                                THRESHOLD, 1.0, api_name="/segment")
    assert problems == ""
    assert [item["caption"] for item in gallery] == [
        f"{p.name}: {view}" for p in images for view in ("overlay", "probability", "uncertainty")]
    reference = Predictor.from_checkpoint(app_server["ckpt"])
    files = client.predict(THRESHOLD, api_name="/masks")
    assert [Path(f).name for f in files] == ["masks.zip", *(f"{p.stem}.png" for p in images)]
    for image, mask_file in zip(images, files[1:], strict=True):
        expected = reference(image)
        with Image.open(mask_file) as im:
            mask = np.asarray(im)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, expected)
        assert f"foreground {int(expected.sum())} px" in summary


def test_uncertainty_is_the_entropy_of_the_probability() -> None:
    """A pixel at probability 0.5 holds one bit (the colour map's top), one at 0 or 1 none
    (its bottom); for 4 classes, equal shares are log2(4) bits, normalised to 1."""
    binary = np.zeros((8, 8), dtype=np.float32)
    binary[:, :4], binary[:, 6:] = 0.5, 1.0
    classes = np.zeros((4, 8, 8), dtype=np.float32)
    classes[:, :, :4], classes[0, :, 4:] = 0.25, 1.0
    top, bottom = (np.round(np.asarray(HEAT_MAP(v)[:3]) * 255) for v in (1.0, 0.0))
    for prob in (binary, classes):
        item = Segmented("x.png", np.zeros((8, 8, 3), dtype=np.uint8), prob)
        gallery, _ = render([item], 0.5, 1.0, None)
        uncertainty = gallery[2][0]
        side = uncertainty.shape[1]  # drawn larger, square as the image; away from the edge:
        assert uncertainty.shape[0] == side
        assert np.abs(uncertainty[:, : side * 3 // 8].astype(int) - top).max() <= 1
        assert np.abs(uncertainty[:, side * 5 // 8 :].astype(int) - bottom).max() <= 1


def test_a_bad_file_is_one_line_on_the_page(app_server: dict, client: Client,
                                            tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_text("not a picture")
    good = sorted((app_server["data"] / "test" / "image").iterdir())[0]
    _, summary, problems = client.predict([handle_file(str(bad)), handle_file(str(good))],
                                          str(tmp_path / "nowhere"), 0.5, 1.0,
                                          api_name="/segment")
    assert problems.splitlines() == [
        f"**error:** {tmp_path / 'nowhere'}: no such file or folder, and no image matches it "
        "as a pattern",
        "**error:** broken.png: unreadable image (UnidentifiedImageError)"]
    assert good.name in summary  # the good one is still segmented, by the same server


def read_png(path: str | Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_a_report_is_paged_worst_first_as_its_worst_overlays(app_server: dict, client: Client,
                                                             tmp_path: Path) -> None:
    # segdino test drew worst/01_..., 02_..., from the lowest Dice, with the same model
    drawn = sorted((app_server["report"] / "worst").iterdir())
    assert len(drawn) == 3
    _, first, status = client.predict(str(app_server["report"]), api_name="/open_report")
    assert status == "1 of 3"
    shown = [first] + [client.predict(rank, api_name="/review")[0] for rank in (2, 3)]
    for picture, overlay in zip(shown, drawn, strict=True):
        # the report's figures are JPEGs: the page's picture, encoded alike, is the same file
        save_jpeg(read_png(picture), tmp_path / overlay.name)
        assert np.array_equal(read_png(tmp_path / overlay.name), read_png(overlay)), overlay.name
    _, _, problems = client.predict(str(app_server["data"]), api_name="/open_report")
    assert problems == (f"**error:** {app_server['data'] / 'summary.json'}: not a segdino "
                        "test report (No such file or directory)")


def test_a_correction_is_saved_once_unless_replacing(tmp_path: Path) -> None:
    dataset = tmp_path / "ds"
    image_path = tmp_path / "upload" / "case.png"
    image_path.parent.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (30, 20, 3), np.uint8)
    Image.fromarray(image).save(image_path)
    mask = np.zeros((30, 20), bool)
    mask[5:20, 3:9] = True
    layer = starting_layer(image, mask)
    assert np.array_equal(painted_mask(layer, (30, 20)), mask)
    assert np.array_equal(painted_mask(np.repeat(np.repeat(layer, 2, 0), 2, 1), (30, 20)), mask)
    save_correction(mask, image_path, dataset, replace=False)
    (pair,) = find_pairs(dataset / "train")  # what training will read
    assert pair == (dataset / "train" / "image" / "case.png",
                    dataset / "train" / "mask" / "case.png")
    assert np.array_equal(np.asarray(Image.open(pair[0])), image)
    assert set(np.unique(np.asarray(Image.open(pair[1])))) == {0, 255}
    with pytest.raises(UserError, match="case.png: exists .tick 'Replace"):
        save_correction(~mask, image_path, dataset, replace=False)
    assert np.array_equal(np.asarray(Image.open(pair[1])) == 255, mask)  # untouched
    save_correction(~mask, image_path, dataset, replace=True)
    assert np.array_equal(np.asarray(Image.open(pair[1])) == 255, ~mask)


def test_without_gradio_the_command_names_the_extra(monkeypatch, capsys) -> None:
    for name in [m for m in sys.modules if m == "gradio" or m.startswith(("gradio.",
                                                                          "segdino.app"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gradio", None)  # what an import of a missing one does
    assert main(["app"]) == 2
    assert capsys.readouterr().err == ("segdino app: error: segdino app needs Gradio: "
                                       "pip install segdino[app]\n")


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; `make test` installs it where it can
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install chromium, as root)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_in_a_browser_the_threshold_slider_redraws(app_server: dict, browser,
                                                   tmp_path: Path) -> None:
    """Upload, segment, move the threshold slider, read the page; and a screenshot of each
    tab (into $SEGDINO_SCREENSHOTS when set: the README's come from there)."""
    shots = Path(os.environ.get("SEGDINO_SCREENSHOTS", tmp_path))
    image = sorted((app_server["data"] / "test" / "image").iterdir())[0]
    reference = Predictor.from_checkpoint(app_server["ckpt"])
    _, prob = reference(image, return_probabilities=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app_server["url"])
    page.locator("#segment-images input[type=file]").set_input_files(str(image))
    page.get_by_role("button", name="Segment", exact=True).click()
    summary = page.locator("#segment-summary")
    expected = f"foreground {int((prob > THRESHOLD).sum())} px"
    summary.get_by_text(expected).wait_for()
    page.locator("#threshold input[type=range]").focus()
    for _ in range(3):  # three steps of 0.01 down, as the arrow keys move the slider
        page.keyboard.press("ArrowLeft")
    lower = round(THRESHOLD - 0.03, 2)
    summary.get_by_text(f"foreground {int((prob > lower).sum())} px").wait_for()
    assert f"at threshold {lower:.2f}" in summary.inner_text()
    page.screenshot(path=shots / "app_segment.png", full_page=True)

    page.get_by_role("tab", name="Review a test run").click()
    page.get_by_role("button", name="Open").wait_for()
    page.get_by_label("Report folder").fill(str(app_server["report"]))
    page.get_by_role("button", name="Open").click()
    page.get_by_text("1 of 3").wait_for()
    page.screenshot(path=shots / "app_review.png", full_page=True)

    # a test image that the training split lacks, its prediction saved as drawn
    page.get_by_role("tab", name="Correct").click()
    page.get_by_role("button", name="Load into the editor").wait_for()  # the tab is drawn
    new = sorted((app_server["data"] / "test" / "image").iterdir())[2]
    train = app_server["data"] / "train"
    assert not (train / "mask" / new.name).exists()
    page.locator("#correct-image input[type=file]").set_input_files(str(new))
    page.locator("#correct-image").get_by_text(new.name).wait_for()
    page.get_by_role("button", name="Load into the editor").click()
    page.get_by_text("Upload an image").wait_for(state="hidden")  # it is loading
    page.get_by_text("processing |").wait_for(state="hidden")
    page.get_by_role("button", name="Save", exact=True).click()
    message = page.locator("#correct-message")
    message.get_by_text("saved").wait_for()
    assert message.inner_text() == (f"saved {train / 'mask' / new.name}, "
                                    f"{train / 'image' / new.name}")
    with Image.open(train / "mask" / new.name) as im:
        assert np.array_equal(np.asarray(im) == 255, reference(new))
    page.screenshot(path=shots / "app_correct.png", full_page=True)
    page.get_by_role("button", name="Save", exact=True).click()
    message.get_by_text("exists").wait_for()
    assert message.inner_text() == (f"error: {train / 'mask' / new.name}: exists (tick 'Replace "
                                    "an existing mask of this name' to overwrite it)")
    for name in ("app_segment", "app_review", "app_correct"):
        with Image.open(shots / f"{name}.png") as im:
            assert im.width == 1280 and len(im.getcolors(1 << 16) or range(1 << 16)) > 50
