"""``meer unmask IMG -o OUT``: take the mask off a face and save the restored crop."""

from __future__ import annotations

import argparse
from pathlib import Path

from meer.cli.inference import add_model_arguments, load_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "unmask", help="restore the lower face hidden by a mask", description=__doc__,
        epilog="The output is the aligned face crop at the model's input size, repainted only if the "
        "mask classifier finds a mask (otherwise it is the crop unchanged, and the command says so); "
        "the image format follows OUT's suffix (.png, .jpg, ...).",
    )
    parser.add_argument("image", metavar="IMG", help="photo of a (masked) face")
    parser.add_argument("--output", "-o", required=True, metavar="OUT", help="where to write the restored face")
    parser.add_argument("--occlusion", metavar="FILE", help="also write the predicted mask region as a grey image")
    parser.add_argument("--aligned-output", metavar="FILE", help="also write the aligned input crop")
    parser.add_argument("--in-photo", metavar="FILE",
                        help="also write the whole photo with the restored region put back in place")
    parser.add_argument("--no-flip", dest="flip", action="store_false",
                        help="restore the face once, not also mirrored and averaged (half the work)")
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def image_format(path: str | Path) -> str:
    """The Pillow format that ``path``'s suffix names."""
    from PIL import Image

    found = Image.registered_extensions().get(Path(path).suffix.lower())
    if found is None:
        raise ValueError(f"{path}: unknown image suffix {Path(path).suffix!r}; use .png or .jpg")
    return found


def save_image(path: str | Path, pixels) -> Path:
    """Write uint8 pixels to ``path`` atomically, in the format its suffix names."""
    import io

    from PIL import Image

    from meer.io import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format(path))
    return atomic_write_bytes(path, buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from meer.data.photos import load_image

    for path in (args.output, args.occlusion, args.aligned_output, args.in_photo):
        if path:
            image_format(path)  # a bad suffix fails before the model runs
    if args.in_photo and args.aligned:
        raise ValueError("--in-photo needs a photo, not an --aligned crop")
    model = load_from_args(args)
    if args.aligned:
        result = model.unmask(args.image, aligned=True, flip=args.flip)
    else:  # decoded once: the face is found in it, and --in-photo puts the restoration back into it
        photo = load_image(args.image)
        result = model.unmask(model.face(photo, name=args.image), flip=args.flip)
    written = {"output": str(save_image(args.output, result.restored))}
    if args.occlusion:
        grey = np.round(result.occlusion * 255).astype(np.uint8)
        written["occlusion"] = str(save_image(args.occlusion, grey))
    if args.aligned_output:
        written["aligned_output"] = str(save_image(args.aligned_output, result.aligned))
    if args.in_photo:
        written["in_photo"] = str(save_image(args.in_photo, result.in_photo(photo)))
    if args.json:
        print_json({**written, "mask_detected": result.mask_detected, "restored": result.mask_detected,
                    "mask_type": result.mask_type,
                    "face": result.face.to_dict()})
        return 0
    if result.mask_detected:
        in_photo = f", and in the photo to {written['in_photo']}" if args.in_photo else ""
        print(f"mask detected (looks most like: {result.mask_type}); restored face written to {written['output']}{in_photo}")
    else:
        print(f"no mask detected, nothing to restore; the aligned face is written unchanged to {written['output']}")
    return 0
