"""Temperature scaling and ECE: the fitted temperature recovers the one the labels were
drawn with; ECE against a hand computation and against a second, loop-based one."""

from __future__ import annotations

import pytest
import torch

from segdino.calibration import expected_calibration_error, fit_temperature


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fitting_recovers_a_known_temperature(true_t: float) -> None:
    g = torch.Generator().manual_seed(int(true_t * 10))
    logits = 3 * torch.randn(200_000, 1, generator=g)
    labels = (torch.rand(logits.shape, generator=g) < torch.sigmoid(logits / true_t)).float()
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.03)


def test_fitting_recovers_a_known_temperature_for_classes() -> None:
    g = torch.Generator().manual_seed(3)
    logits = 2 * torch.randn(60_000, 4, generator=g)
    labels = torch.multinomial((logits / 1.7).softmax(1), 1, generator=g)[:, 0]
    labels[:1000] = -100  # ignored pixels change nothing
    assert fit_temperature(logits, labels) == pytest.approx(1.7, rel=0.03)


def test_ece_by_hand() -> None:
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right): bins of 0.9 and 0.6
    # |0.5 - 0.9| * 2/3 + |1 - 0.6| * 1/3 = 0.4
    p = torch.tensor([0.9, 0.1, 0.6])
    logits = torch.log(p / (1 - p)).reshape(3, 1)
    truth = torch.tensor([1.0, 1.0, 1.0]).reshape(3, 1)
    assert expected_calibration_error(logits, truth) == pytest.approx(0.4)


def test_ece_against_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 3, generator=g) * 2
    truth = torch.randint(0, 3, (5000,), generator=g)
    probs = logits.double().softmax(1).numpy()
    conf, right = probs.max(1), probs.argmax(1) == truth.numpy()
    total = 0.0
    for b in range(15):
        inside = (conf >= b / 15) & (conf < (b + 1) / 15)
        if inside.any():
            total += inside.sum() * abs(conf[inside].mean() - right[inside].mean())
    assert expected_calibration_error(logits, truth) == pytest.approx(total / 5000, rel=1e-9)
