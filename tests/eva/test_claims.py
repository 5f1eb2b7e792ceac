"""The paper's claim at a small budget: masked modelling of a frozen image-text aligned teacher's features
(EVA) fine-tunes better than pixel MIM (MAE) and than no pretraining (Scratch), with the same student, epochs
and fine-tuning; and the student learns to predict the teacher's patch features.

Budget (about 40 CPU seconds): teacher on 1,000 shard-0 images for 3 epochs, students pretrained on 1,000
shard-1 images for 2 epochs, fine-tuned 4 epochs on 200 labels, scored on 500 test images, seed 0.
Measured here (the same seed gives the same numbers on the same machine):
fine-tune top-1 EVA 20.4 %, MAE 18.6 %, Scratch 18.6 %; EVA patch cosine 0.51 (unchanged after the evaluation
passes moved to batches of 128). The margins asserted are below the measured ones; the quick preset's table in
the card is the fuller measurement (EVA 28.0, MAE 26.1, Scratch 26.7: EVA +1.9 over MAE, +1.3 over Scratch).
The paper's other half, MAE > Scratch, is not asserted: it does not reproduce at either budget (here 18.6 vs
18.6; quick −0.6 points), and the card reports it as measured.
"""

from pathlib import Path

import pytest

from reprozoo.core.threads import thread_limits
from reprozoo.eva.experiment import EVAConfig, run


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    cfg = EVAConfig.from_preset("smoke", n_pretrain=1000, n_teacher=1000, teacher_epochs=3, pretrain_epochs=2,
                                finetune_epochs=4, label_counts=(200,), n_test=500, arms=("Scratch", "MAE"),
                                device="cpu")
    with thread_limits(1):  # the thread count of the measurement (sums in another order could move a digit)
        result = run(cfg, Path(tmp_path_factory.mktemp("eva_claim")))
    return {(k[2], m): v[0] for k, stats in result.summary().items() for m, v in stats.items()}


def test_eva_fine_tunes_better_than_mae_and_scratch(summary):
    eva, mae, scratch = (summary[(a, "finetune_top1")] for a in ("EVA", "MAE", "Scratch"))
    assert eva - mae >= 1.0, (eva, mae)  # measured +1.8 points
    assert eva - scratch >= 1.0, (eva, scratch)  # measured +1.8 points


def test_student_predicts_teacher_patch_features(summary):
    assert summary[("EVA", "patch_cosine")] >= 0.35  # measured 0.51 (an untrained head gives about 0)
