"""The app's page: its tabs in one `gr.Blocks`, and serving it on this machine (or, asked
explicitly, on another address)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from segdino.app.correct import correct_tab
from segdino.app.review import review_tab
from segdino.app.segment import segment_tab
from segdino.errors import UserError
from segdino.inference.predictor import Predictor

LOCAL_HOST = "127.0.0.1"


def build_page(predictor: Predictor | None, dataset: Path | None = None) -> gr.Blocks:
    """The page: Segment, Review a test run and Correct, sharing one loaded model."""
    with gr.Blocks(title="segdino", analytics_enabled=False) as page:
        gr.Markdown("# segdino")
        with gr.Tab("Segment"):
            segment_tab(predictor)
        with gr.Tab("Review a test run"):
            review_tab(predictor, dataset)
        with gr.Tab("Correct"):
            correct_tab(predictor, dataset)
    return page


def serve(page: gr.Blocks, host: str = LOCAL_HOST, port: int = 7860, block: bool = True) -> str:
    """Serve `page` on `host`:`port` and return its address; with `block`, until Ctrl-C."""
    try:
        _, url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=True,
                                quiet=True, ssr_mode=False, footer_links=[])
    except OSError as exc:  # Gradio's "cannot find empty port" and bind errors
        raise UserError(f"--port {port}: cannot serve on {host}:{port} ({exc})") from None
    if block:
        page.block_thread()
    return url
