from meer.models.backbones.dlib_resnet import (
    DlibResNet,
    dlib_teacher,
    find_dlib_model,
    read_dlib_weights,
)
from meer.models.backbones.iresnet import LAYERS, IResNet, create_iresnet

__all__ = [
    "LAYERS", "DlibResNet", "IResNet", "create_backbone", "create_iresnet", "dlib_teacher", "find_dlib_model",
    "read_dlib_weights",
]


def create_backbone(name: str, width: float = 1.0, input_size: int = 112, embedding_dim: int = 512,
                    dropout: float = 0.0, pretrained: str = ""):
    """An IResNet (``iresnet18`` ... ``iresnet100``) or dlib's ResNet (``dlib_resnet``).

    ``pretrained="dlib"`` copies dlib's trained weights into ``dlib_resnet`` (from the
    installed ``face-recognition-models`` package).
    """
    if name == "dlib_resnet":
        if width != 1.0:
            raise ValueError("dlib_resnet has a fixed width; leave model.width at 1.0")
        model = DlibResNet(input_size=input_size, embedding_dim=embedding_dim)
        return model.load_dlib() if pretrained == "dlib" else model
    if pretrained:
        raise ValueError(f"no pretrained weights {pretrained!r} for {name}")
    return create_iresnet(name, width=width, input_size=input_size, embedding_dim=embedding_dim, dropout=dropout)
