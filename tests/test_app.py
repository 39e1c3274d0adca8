"""`segdino app` through its own HTTP API (the Gradio client), against a server this module
starts on a free port with a tiny random model: masks equal `Predictor`'s, bad files are one
line on the page while the server keeps serving, a report is paged through worst first, and
a corrected mask is saved without overwriting.
"""

from __future__ import annotations

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
from segdino.evaluation import evaluate
from segdino.inference.predictor import Predictor
from segdino.models.segdino import SegDINO

pytest.importorskip("gradio", reason="segdino[app] is not installed")
from gradio_client import Client, handle_file  # noqa: E402

from segdino.app.model import load_predictor  # noqa: E402
from segdino.app.page import build_page, serve  # noqa: E402


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
    _, summary, problems = client.predict([handle_file(str(p)) for p in images], "", 0.5, 1.0,
                                          api_name="/segment")
    assert problems == ""
    reference = Predictor.from_checkpoint(app_server["ckpt"])
    files = client.predict(0.5, api_name="/masks")
    assert [Path(f).name for f in files] == ["masks.zip", *(f"{p.stem}.png" for p in images)]
    for image, mask_file in zip(images, files[1:], strict=True):
        expected = reference(image)
        with Image.open(mask_file) as im:
            mask = np.asarray(im)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, expected)
        assert f"foreground {int(expected.sum())} px" in summary


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


def test_without_gradio_the_command_names_the_extra(monkeypatch, capsys) -> None:
    for name in [m for m in sys.modules if m == "gradio" or m.startswith(("gradio.",
                                                                          "segdino.app"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gradio", None)  # what an import of a missing one does
    assert main(["app"]) == 2
    assert capsys.readouterr().err == ("segdino app: error: segdino app needs Gradio: "
                                       "pip install segdino[app]\n")
