from meer.models.backbones.iresnet import LAYERS, IResNet, create_iresnet

__all__ = ["LAYERS", "IResNet", "create_iresnet"]
