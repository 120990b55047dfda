"""The HTTP API of ``meer serve`` and the page at ``/``.

Endpoints (uploads are ``multipart/form-data``; every answer is JSON):

* ``GET  /api/health``  model and limits;
* ``POST /api/verify``  files ``a`` and ``b`` -> score, decision, threshold, both faces;
* ``POST /api/unmask``  file ``image`` -> mask verdict and the aligned / restored (null when no mask
  was found) / occlusion crops as PNG data URLs, and ``in_photo``: the photo around the face
  with the restoration put back, a JPEG data URL (null when no mask was found, or for an aligned crop);
* ``POST /api/embed``   one or more files ``image`` -> unit embeddings;
* ``POST /api/identify`` file ``image`` (optional ``top_k``) -> the person or ``null`` for
  unknown, the score, the identification threshold and the top candidates;
* ``GET  /api/people``  everyone enrolled (name, templates, masked templates, times);
* ``POST /api/enroll``  text ``name``, one or more files ``image``, optional ``masked``
  (``auto``: the model's mask verdict, ``true``, ``false``) and ``add=true`` (add photos to
  someone enrolled, or enrol a new name as usual; without it a name already enrolled is a 409)
  -> the person;
* ``PATCH /api/people/{name}`` text ``name`` -> renamed; ``DELETE /api/people/{name}`` ->
  the person and every template of theirs removed.

The gallery endpoints need ``meer serve --gallery FILE``. Enrol, rename and delete change it and
need the service's token (``meer serve --token`` or ``MEER_TOKEN``) as ``Authorization: Bearer
TOKEN``; a service started without a token is read-only.

Optional form fields: ``aligned=true`` (the uploads are pre-aligned crops) and, for verify,
``images=true`` (add each face's aligned and restored crops and its ``in_photo``, as the page does).

Rules: a photo with several faces is answered for its main face (the largest, unless a slightly
smaller one is much nearer the centre) and the face's ``num_faces`` says so. Errors are
``{"error": {"code", "message", "field"}}`` with these codes and statuses: ``too_large`` 413
(request body over the limit), ``image_too_large`` 413 (too many pixels), ``not_an_image`` 415,
``not_multipart`` 415, ``corrupt_image`` 422, ``no_face`` 422, ``missing_field`` /
``bad_request`` / ``bad_name`` 400, ``unauthorized`` 401 (missing or wrong token), ``read_only``
403 (no token configured), ``not_found`` / ``unknown_person`` 404, ``method_not_allowed`` 405,
``duplicate_name`` / ``no_gallery`` 409.

Uploads are held in memory (the request body is capped before it is parsed), never written to
disk; the network runs in a worker thread, one request at a time. A body over the limit is read
and thrown away (up to :data:`DRAIN_FACTOR` times the limit) before the 413 answer, so a client
that is still sending gets the answer, not a broken connection.
"""

from __future__ import annotations

import base64
import hmac
import io
import threading
from dataclasses import asdict, dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from meer import __version__
from meer.api import (
    CorruptImageError,
    Face,
    ImageTooLargeError,
    NoFaceError,
    NotAnImageError,
    UnmaskResult,
    load_image,
)
from meer.gallery import (
    DuplicateNameError,
    GalleryError,
    GalleryStore,
    UnknownPersonError,
    check_name,
    enroll_photos,
    identification_threshold,
    identify_face,
)

if TYPE_CHECKING:
    from meer.api import FaceModel

# An oversized body is drained up to this many times the limit before the 413 answer; beyond
# that the connection is closed (a client sending that much is not waiting for an answer).
DRAIN_FACTOR = 8


@dataclass
class Limits:
    """What one request may send.

    max_upload_bytes: the whole request body
    max_pixels:       width x height of each image, checked before it is decoded
    max_files:        images in one ``/api/embed`` request
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 16


class ApiError(Exception):
    """An answer with an error status: turned into the JSON error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


# Statuses for the errors the model raises on bad inputs (order matters: subclasses first).
_INPUT_ERRORS = (
    (ImageTooLargeError, 413, "image_too_large"),
    (NotAnImageError, 415, "not_an_image"),
    (CorruptImageError, 422, "corrupt_image"),
    (NoFaceError, 422, "no_face"),
)


def _input_error(err: ValueError, field: str) -> ApiError:
    for kind, status, code in _INPUT_ERRORS:
        if isinstance(err, kind):
            return ApiError(status, code, str(err), field)
    return ApiError(400, "bad_request", str(err), field)


def data_url(pixels: np.ndarray, format: str = "PNG") -> str:
    """uint8 ``[H, W, 3]`` or ``[H, W]`` -> ``data:image/png;base64,...`` (or the Pillow ``format`` named)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return f"data:image/{format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def around_face(photo: np.ndarray, box, margin: float = 0.5, side: int = 280) -> np.ndarray:
    """The square of ``photo`` centred on a face's ``box`` (x0, y0, x1, y1), ``1 + 2 * margin``
    times the box's longer side (cut at the photo's edges), shrunk to at most ``side`` pixels."""
    from PIL import Image

    x0, y0, x1, y1 = box
    half = (0.5 + margin) * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    height, width = photo.shape[:2]
    left, top = max(0, round(cx - half)), max(0, round(cy - half))
    right, bottom = min(width, round(cx + half)), min(height, round(cy + half))
    crop = Image.fromarray(photo[top:bottom, left:right])
    crop.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(crop)


def _flag(form: FormData, name: str) -> bool:
    value = form.get(name)
    return isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on")


def _text(form: FormData, field: str) -> str:
    value = form.get(field)
    if not isinstance(value, str):
        raise ApiError(400, "missing_field", f"no text in the form field {field!r}", field)
    return value


class _StrictParser(MultiPartParser):
    """Text fields must be UTF-8: Starlette would read other bytes as Latin-1, and a person's
    name would be stored garbled."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(f"the form field {part.field_name!r} is not UTF-8 text") from None
        super().on_part_end()


class _Service:
    """The request handlers, around one model (and optionally a gallery)."""

    def __init__(self, model: FaceModel, limits: Limits, gallery: GalleryStore | None, token: str | None) -> None:
        self.model = model
        self.limits = limits
        self.gallery = gallery
        self.token = token
        self.lock = threading.Lock()  # one inference at a time: predictable memory and latency

    async def read_form(self, request: Request, max_files: int) -> FormData:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "not_multipart", "send the request as multipart/form-data")
        limit = self.limits.max_upload_bytes
        declared = request.headers.get("content-length")
        over = declared is not None and declared.isdigit() and int(declared) > limit
        body, received = bytearray(), 0
        try:
            async for chunk in request.stream():  # counted as it arrives: Content-Length may lie
                received += len(chunk)
                over = over or received > limit
                if not over:
                    body += chunk
                elif received > DRAIN_FACTOR * limit:
                    break  # stop reading; the server closes the connection after answering
        except ClientDisconnect:
            raise ApiError(400, "bad_request", "the client went away during the upload") from None
        if over:
            raise ApiError(413, "too_large", f"the upload is over the limit of {limit / 2**20:g} MB")

        async def whole_body():
            yield bytes(body)

        parser = _StrictParser(request.headers, whole_body(), max_files=max_files, max_fields=8)
        parser.spool_max_size = limit  # keep every uploaded file in memory, never on disk
        try:
            return await parser.parse()
        except MultiPartException as err:
            raise ApiError(400, "bad_request", f"malformed form: {err.message}") from None

    def face(self, upload: UploadFile, field: str, aligned: bool) -> Face:
        return self.photo_face(upload, field, aligned)[1]

    def photo_face(self, upload: UploadFile, field: str, aligned: bool) -> tuple[np.ndarray, Face]:
        """The upload decoded, and its main face: the photo is what a restoration goes back into."""
        # messages call the upload what the client knows it by: its field and file name
        name = f"{field} ({upload.filename})" if upload.filename else field
        try:
            photo = load_image(upload.file.read(), self.limits.max_pixels, name)
            return photo, self.model.face(photo, aligned, name=name)
        except ValueError as err:
            raise _input_error(err, field) from None

    def in_photo(self, result: UnmaskResult, photo: np.ndarray) -> str | None:
        """The photo around the face with the restoration put back (JPEG); None when nothing was
        restored or the upload was an aligned crop."""
        if not result.mask_detected or result.face.matrix is None:
            return None
        return data_url(around_face(result.in_photo(photo), result.face.box), "JPEG")

    def describe(self, face: Face, photo: np.ndarray, upload: UploadFile, field: str, images: bool) -> dict[str, Any]:
        """JSON for one face; with ``images`` also its crops and the unmasking verdict."""
        out = {"field": field, "filename": upload.filename, **face.to_dict()}
        if images:
            out["aligned"] = data_url(face.aligned)
            if self.model.has_generator:
                result = self.model.unmask(face)
                out.update(mask_detected=result.mask_detected, mask_type=result.mask_type)
                if result.mask_detected:  # a restoration of a bare face is only a degraded copy
                    out["restored"] = data_url(result.restored)
                    if (in_photo := self.in_photo(result, photo)) is not None:
                        out["in_photo"] = in_photo
        return out

    def check_token(self, request: Request) -> None:
        """Changes to the gallery need the service's token."""
        if self.token is None:
            raise ApiError(403, "read_only", "this service is read-only: start meer serve with --token "
                           "(or MEER_TOKEN) to enrol, rename or delete")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "send the service's token as 'Authorization: Bearer TOKEN'")
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ApiError(401, "unauthorized", "that is not this service's token")

    def need_gallery(self) -> GalleryStore:
        if self.gallery is None:
            raise ApiError(409, "no_gallery", "this service has no gallery: start meer serve with --gallery FILE")
        return self.gallery

    def run_locked(self, work):
        with self.lock:
            return work()

    async def run(self, work):
        return await run_in_threadpool(self.run_locked, work)

    # ------------------------------------------------------------------ endpoints

    async def health(self, request: Request) -> JSONResponse:
        model = self.model
        return JSONResponse({
            "status": "ok",
            "version": __version__,
            "model": {
                "checkpoint": model.checkpoint.name,
                "input_size": model.input_size,
                "embedding_dim": model.embedding_dim,
                "threshold": model.threshold,
                "calibrated": model.calibrated,
                "can_unmask": model.has_generator,
            },
            "limits": asdict(self.limits),
            "gallery": None if self.gallery is None else self.gallery_health(),
        })

    def gallery_health(self) -> dict[str, Any]:
        threshold, calibrated = identification_threshold(self.model)
        # the threshold an identification uses follows the probe's mask verdict
        by_probe = {"masked": identification_threshold(self.model, True)[0],
                    "unmasked": identification_threshold(self.model, False)[0]}
        return {"people": len(self.gallery), "identification_threshold": threshold,
                "identification_thresholds": by_probe, "calibrated": calibrated,
                "writable": self.token is not None}

    async def verify(self, request: Request) -> JSONResponse:
        form = await self.read_form(request, max_files=2)
        uploads = {field: _upload(form, field) for field in ("a", "b")}
        aligned, images = _flag(form, "aligned"), _flag(form, "images")

        def work():
            photos, faces = zip(*(self.photo_face(upload, field, aligned) for field, upload in uploads.items()))
            result = self.model.verify(faces[0], faces[1])
            return {
                "same": result.same,
                "score": result.score,
                "threshold": result.threshold,
                "calibrated": result.calibrated,
                "setting": result.setting,
                "masked": list(result.masked),
                "faces": [self.describe(face, photo, uploads[field], field, images)
                          for face, photo, field in zip(faces, photos, uploads)],
            }

        return JSONResponse(await self.run(work))

    async def unmask(self, request: Request) -> JSONResponse:
        if not self.model.has_generator:
            raise ApiError(400, "bad_request", "this model was trained without a generator, so it cannot unmask")
        form = await self.read_form(request, max_files=1)
        upload, aligned = _upload(form, "image"), _flag(form, "aligned")

        def work():
            photo, face = self.photo_face(upload, "image", aligned)
            result = self.model.unmask(face)
            return {
                "mask_detected": result.mask_detected,
                "mask_type": result.mask_type,
                "face": {"filename": upload.filename, **result.face.to_dict()},
                "aligned": data_url(result.aligned),
                # only where a mask was found; otherwise the page says there was nothing to restore
                "restored": data_url(result.restored) if result.mask_detected else None,
                "occlusion": data_url(np.round(result.occlusion * 255).astype(np.uint8)),
                "in_photo": self.in_photo(result, photo),
            }

        return JSONResponse(await self.run(work))

    async def embed(self, request: Request) -> JSONResponse:
        form = await self.read_form(request, max_files=self.limits.max_files)
        uploads = [u for u in form.getlist("image") if isinstance(u, UploadFile)]
        if not uploads:
            raise ApiError(400, "missing_field", "send one or more files in the field 'image'", "image")
        aligned = _flag(form, "aligned")

        def work():
            faces = [self.face(upload, "image", aligned) for upload in uploads]
            embeddings = self.model.embed(faces)
            return {
                "dim": int(embeddings.shape[1]),
                "embeddings": embeddings.tolist(),
                "faces": [{"filename": u.filename, **f.to_dict()} for u, f in zip(uploads, faces)],
            }

        return JSONResponse(await self.run(work))

    async def identify(self, request: Request) -> JSONResponse:
        gallery = self.need_gallery()
        form = await self.read_form(request, max_files=1)
        upload, aligned = _upload(form, "image"), _flag(form, "aligned")
        top_k = form.get("top_k", "5")
        if not (isinstance(top_k, str) and top_k.strip().isdigit() and 1 <= int(top_k) <= 100):
            raise ApiError(400, "bad_request", "top_k must be a whole number from 1 to 100", "top_k")

        def work():
            face = self.face(upload, "image", aligned)
            answer, masked = identify_face(gallery, self.model, face, int(top_k))
            return {**answer.to_dict(), "masked": masked, "face": {"filename": upload.filename, **face.to_dict()}}

        return JSONResponse(await self.run(work))

    async def people(self, request: Request) -> JSONResponse:
        gallery = self.need_gallery()
        people = await self.run(gallery.people)
        return JSONResponse({"people": [p.to_dict() for p in people]})

    async def enroll(self, request: Request) -> JSONResponse:
        gallery = self.need_gallery()
        form = await self.read_form(request, max_files=self.limits.max_files)
        self.check_token(request)
        name = _name(_text(form, "name"))
        uploads = [u for u in form.getlist("image") if isinstance(u, UploadFile)]
        if not uploads:
            raise ApiError(400, "missing_field", "send one or more photos in the field 'image'", "image")
        masked_field = str(form.get("masked", "auto")).strip().lower()
        if masked_field not in ("auto", "true", "false"):
            raise ApiError(400, "bad_request", "masked must be auto, true or false", "masked")
        masked = None if masked_field == "auto" else masked_field == "true"
        aligned, add = _flag(form, "aligned"), _flag(form, "add")

        def work():
            # every photo is checked before anything is written: one bad photo enrols nobody
            faces = [self.face(upload, "image", aligned) for upload in uploads]
            try:
                person = enroll_photos(gallery, self.model, name, faces, masked=masked, add=add,
                                       sources=[u.filename for u in uploads])
            except GalleryError as err:
                raise _gallery_error(err, "name") from None
            return {"person": person.to_dict()}

        return JSONResponse(await self.run(work))

    async def rename(self, request: Request) -> JSONResponse:
        gallery = self.need_gallery()
        self.check_token(request)
        form = await self.read_form(request, max_files=0)
        old, new = _name(request.path_params["name"]), _name(_text(form, "name"))

        def work():
            try:
                gallery.rename(old, new)
            except GalleryError as err:
                raise _gallery_error(err, "name") from None
            return {"renamed": old, "name": new}

        return JSONResponse(await self.run(work))

    async def delete(self, request: Request) -> JSONResponse:
        gallery = self.need_gallery()
        self.check_token(request)
        name = _name(request.path_params["name"])

        def work():
            try:
                return {"deleted": name, "templates": gallery.delete(name)}
            except GalleryError as err:
                raise _gallery_error(err, None) from None

        return JSONResponse(await self.run(work))


def _name(value: str) -> str:
    try:
        return check_name(value)
    except GalleryError as err:
        raise ApiError(400, "bad_name", str(err), "name") from None


def _gallery_error(err: GalleryError, field: str | None) -> ApiError:
    if isinstance(err, DuplicateNameError):
        return ApiError(409, "duplicate_name", str(err), field)
    if isinstance(err, UnknownPersonError):
        return ApiError(404, "unknown_person", str(err), None)
    return ApiError(400, "bad_request", str(err), field)


def _upload(form: FormData, field: str) -> UploadFile:
    value = form.get(field)
    if not isinstance(value, UploadFile):
        raise ApiError(400, "missing_field", f"no file in the form field {field!r}", field)
    return value


async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    body = {"code": err.code, "message": err.message, "field": err.field}
    return JSONResponse({"error": body}, status_code=err.status)


async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "bad_request")
    return JSONResponse({"error": {"code": code, "message": err.detail, "field": None}}, status_code=err.status_code)


def create_app(
    model: FaceModel, limits: Limits | None = None, gallery: GalleryStore | None = None, token: str | None = None
) -> Starlette:
    """The ASGI app: serve it with any ASGI server (``meer serve`` uses Uvicorn).

    gallery: the identification gallery (None: the gallery endpoints answer ``no_gallery``)
    token:   the secret that enrol / rename / delete need (None: the gallery is read-only)
    """
    service = _Service(model, limits or Limits(), gallery, token or None)
    page = resources.files("meer.web").joinpath("index.html").read_text(encoding="utf-8")
    routes = [
        Route("/", lambda request: HTMLResponse(page)),
        Route("/api/health", service.health),
        Route("/api/verify", service.verify, methods=["POST"]),
        Route("/api/unmask", service.unmask, methods=["POST"]),
        Route("/api/embed", service.embed, methods=["POST"]),
        Route("/api/identify", service.identify, methods=["POST"]),
        Route("/api/enroll", service.enroll, methods=["POST"]),
        Route("/api/people", service.people),
        # {name:path}: a name may hold "/" (sent escaped or not)
        Route("/api/people/{name:path}", service.rename, methods=["PATCH"]),
        Route("/api/people/{name:path}", service.delete, methods=["DELETE"]),
    ]
    return Starlette(routes=routes, exception_handlers={ApiError: _api_error, HTTPException: _http_error})
