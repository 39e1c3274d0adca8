"""`segdino app`: a local web page (Gradio) to segment images, look through a test report
worst first, and correct masks into a dataset. Gradio is an optional extra; importing this
package without it is a one-line error naming `pip install segdino[app]`.

- `model.py`: the model, loaded once from a checkpoint, a model folder or a Hub id.
- `segment.py`, `review.py`, `correct.py`: one tab each, its work in plain functions that
  the tests call too, then the widgets that call them.
- `page.py`: the tabs on one page, and serving it.
"""

from segdino.errors import MissingExtra

try:
    import gradio  # noqa: F401
except ImportError:
    raise MissingExtra("segdino app needs Gradio: pip install segdino[app]") from None
