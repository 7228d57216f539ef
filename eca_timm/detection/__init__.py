"""Object detection and instance segmentation with ECA-ResNet backbones on torchvision's detectors."""
from .models import *  # noqa: F401,F403
from .models import __all__
