"""ncrobust.models: the paper's classifiers, by name, with named feature taps.

``create_model(name, num_classes=..., in_channels=..., image_size=..., mean=..., std=...)`` builds a
:class:`TappedClassifier`; ``model(x)`` gives logits for pixels in [0, 1] and
``model(x, taps=model.layers())`` also gives every intermediate activation from the same pass.

Registered models and their taps (in depth order):

- ``vgg11_bn``: block1 .. block7, penultimate. Images of at least 16 px.
- ``preact_resnet18``: stem, layer1 .. layer4, penultimate. Images of at least 8 px.
- ``small_cnn``: block1 .. block3, penultimate. Sized for 8x8 digits; images of at least 4 px.

The paper models come in two layouts chosen by ``image_size``: the CIFAR layout below 128 px (the
paper's 32 px) and the ImageNette layout from 128 px (the paper's 160 px). Both end in a global
average pool, so other sizes in each range work too; ``penultimate`` (the input of
``model.classifier``) is 512-d either way.
"""

from ncrobust.models.base import TappedClassifier
from ncrobust.models.preact_resnet import PreActResNet18
from ncrobust.models.registry import available_models, create_model, register_model
from ncrobust.models.small_cnn import SmallCNN
from ncrobust.models.vgg import VGG11BN
from ncrobust.views import PENULTIMATE

__all__ = [
    "PENULTIMATE",
    "VGG11BN",
    "PreActResNet18",
    "SmallCNN",
    "TappedClassifier",
    "available_models",
    "create_model",
    "register_model",
]
