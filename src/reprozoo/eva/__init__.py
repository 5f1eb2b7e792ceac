"""EVA (Fang et al., CVPR 2023, arXiv:2211.07636): masked modelling of image-text aligned features.

- :mod:`reprozoo.eva.vit`: the EVA-01 ViT with timm's module and state-dict names (``create_eva``,
  ``load_eva_checkpoint``), from a CPU-sized model to EVA-g;
- :class:`EVAPretrainer` with a :class:`BlockMaskGenerator` and any :class:`PatchTeacher`;
- :mod:`reprozoo.eva.train`: pretraining and fine-tuning loops (layer decay), data-parallel under ``torchrun``;
- :mod:`reprozoo.eva.experiment`: ``reprozoo run eva`` (EVA beside MAE, distillation and training from scratch).
"""

from reprozoo.eva.baselines import MAEPretrainer
from reprozoo.eva.masking import BlockMaskGenerator
from reprozoo.eva.pretrain import EVAPretrainer, PatchTeacher, masked_cosine_loss
from reprozoo.eva.teacher import ClipStyleTeacher, caption_embeddings
from reprozoo.eva.train import linear_probe, param_groups_layer_decay, train_loop
from reprozoo.eva.vit import (
    EVA_CONFIGS,
    Eva,
    EvaAttention,
    EvaBlock,
    checkpoint_filter_fn,
    create_eva,
    eva_giant_patch14_224,
    eva_giant_patch14_336,
    eva_giant_patch14_560,
    eva_small_patch4_32,
    eva_tiny_patch4_32,
    load_eva_checkpoint,
)

__all__ = [
    "EVA_CONFIGS",
    "BlockMaskGenerator",
    "ClipStyleTeacher",
    "EVAPretrainer",
    "Eva",
    "EvaAttention",
    "EvaBlock",
    "MAEPretrainer",
    "PatchTeacher",
    "caption_embeddings",
    "checkpoint_filter_fn",
    "create_eva",
    "eva_giant_patch14_224",
    "eva_giant_patch14_336",
    "eva_giant_patch14_560",
    "eva_small_patch4_32",
    "eva_tiny_patch4_32",
    "linear_probe",
    "load_eva_checkpoint",
    "masked_cosine_loss",
    "param_groups_layer_decay",
    "train_loop",
]
