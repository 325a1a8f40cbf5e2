"""Reading a reference set's files safely: ``.npz`` arrays bounded by their headers, images by theirs.

:class:`Npz` reads an ``.npz`` archive member by member: each member's shape and dtype come from its ``.npy`` header,
and are bounded (:data:`MAX_ARRAY_BYTES`) before its data is read, so a small file cannot make rankplug allocate
gigabytes. :func:`read_image` reads an image's size from its header and refuses one over :data:`MAX_IMAGE_PIXELS`
before decoding it. :func:`folder_batches`, :func:`tensor_batches` and :func:`dataset_batches` turn a folder, a tensor
or a dataset into the uint8 RGB batches Inception reads (:func:`to_uint8`). Every refusal of a file is a
:class:`ReferenceSetError` naming the file. :mod:`rankplug.app.eval.reference` builds reference sets from these.
numpy and Pillow are imported only when a file is read.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import torch
from torch import Tensor

from rankplug._validation import check_dense, shape_str
from rankplug.app.data.files import IMAGE_SUFFIXES, open_image
from rankplug.errors import DataFileError

__all__ = [
    "MAX_ABS_VALUE",
    "MAX_ARRAY_BYTES",
    "MAX_IMAGE_PIXELS",
    "Npz",
    "NpzMember",
    "ReferenceSetError",
    "check_finite",
    "checked_pixels",
    "dataset_batches",
    "floating_member",
    "folder_batches",
    "image_files",
    "images_member",
    "npz_num_images",
    "open_npz",
    "read_image",
    "read_member",
    "tensor_batches",
    "to_uint8",
]

MAX_IMAGE_PIXELS = 1 << 26
"""The most pixels (width x height, 8192 x 8192) one reference image may have; checked before it is decoded."""

MAX_ARRAY_BYTES = 4 << 30
"""The most bytes one array of a reference ``.npz`` may declare (4 GiB: 500,000 features, 1.4 million 32 x 32 RGB
images); checked from the array's header before anything is allocated."""

MAX_ABS_VALUE = 1e8
"""Bound on the magnitude of reference features and statistics: Inception pool features are O(1), and values past
it would overflow the FID's float64 sums into infinities."""

_NPZ_MEMBERS = 64  # an .npz holds a few arrays; a zip directory of thousands of entries is not a reference
_HEADER_BYTES = 10_000  # numpy's own limit on an .npy header
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")  # the decoders rankplug.app.data.files.open_image allows


class ReferenceSetError(ValueError):
    """The reference images (a folder, ``.npz``, tensor or dataset) cannot be used; the message says why."""


def to_uint8(images: Tensor) -> Tensor:
    """Images in ``[-1, 1]`` as the 8-bit RGB torch-fidelity reads: what saving them as PNG files would give.

    Values are clamped to ``[-1, 1]``, mapped to ``[0, 255]`` and rounded; grey images are repeated into R, G, B.
    uint8 images pass through (grey ones repeated). NaN or infinite values are refused: they have no pixel value.

    Shape:
        - ``images``: ``(N, C, H, W)`` with ``C`` = 1 or 3.
        - Output: ``(N, 3, H, W)`` uint8 on ``images``' device.

    Example:
        >>> to_uint8(torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3)).flatten().tolist()
        [0, 128, 255, 0, 128, 255, 0, 128, 255]
    """
    tensor = check_dense(images, "images")
    if tensor.dim() != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(f"images has shape {shape_str(tensor)}; expected (N, C, H, W) with C = 1 (grey) or 3 (RGB)")
    if tensor.dtype != torch.uint8:
        if not tensor.is_floating_point():
            raise TypeError(f"images must be float in [-1, 1] or uint8 in [0, 255]; got {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError("images hold NaN or infinite values; expected float values in [-1, 1]")
        tensor = tensor.float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return tensor.expand(-1, 3, -1, -1) if tensor.shape[1] == 1 else tensor


def check_finite(tensor: Tensor, where: str) -> None:
    """Refuse ``tensor`` (:class:`ReferenceSetError` naming ``where``) if it holds NaN, infinities or values beyond
    :data:`MAX_ABS_VALUE`."""
    if not bool(torch.isfinite(tensor).all()):
        raise ReferenceSetError(f"{where} holds NaN or infinite values")
    if tensor.numel() and float(tensor.abs().max()) > MAX_ABS_VALUE:
        raise ReferenceSetError(f"{where} holds values beyond +-{MAX_ABS_VALUE:g}; Inception features are O(1)")


# ---------------------------------------------------------------------------------------------------------------
# .npz files, read member by member with the allocation bounded by the header.


class NpzMember(NamedTuple):
    """One array of an ``.npz`` as its ``.npy`` header declares it: known before any of its data is read."""

    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: Any  # numpy.dtype
    offset: int  # bytes of magic and header before the data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * int(self.dtype.itemsize)


class Npz:
    """An ``.npz`` archive whose members' shapes and dtypes are known from their headers before any data is read."""

    def __init__(self, handle: BinaryIO, where: str) -> None:
        import numpy as np

        self.where = where
        self.archive = zipfile.ZipFile(handle)
        infos = [info for info in self.archive.infolist() if info.filename.endswith(".npy")]
        if len(infos) > _NPZ_MEMBERS:
            raise ReferenceSetError(f"{where} holds {len(infos)} arrays; a reference .npz holds at most {_NPZ_MEMBERS}")
        self.members: dict[str, NpzMember] = {}
        for info in infos:
            with self.archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(member, _HEADER_BYTES)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(member, _HEADER_BYTES)
                else:
                    raise ReferenceSetError(f"{where}[{info.filename!r}] is an .npy of version {version}")
                parsed = NpzMember(info, tuple(int(n) for n in shape), bool(fortran), dtype, member.tell())
            if parsed.dtype.hasobject or parsed.dtype.fields is not None:
                raise ReferenceSetError(f"{where}[{info.filename[:-4]!r}] holds Python objects or records")
            if info.file_size != parsed.offset + parsed.nbytes:
                raise ReferenceSetError(
                    f"{where}[{info.filename[:-4]!r}] declares shape {parsed.shape} of {parsed.dtype} "
                    f"({parsed.nbytes} bytes) but the archive says {info.file_size - parsed.offset}: truncated or edited"
                )
            self.members[info.filename[:-4]] = parsed

    def read(self, name: str) -> Any:
        """The array ``name`` (native byte order, writable, C order), after :meth:`members`' bounds were checked."""
        import numpy as np

        member = self.members[name]
        if member.nbytes > MAX_ARRAY_BYTES:
            raise ReferenceSetError(
                f"{self.where}[{name!r}] declares shape {member.shape} of {member.dtype}, {member.nbytes / 2**30:.1f} "
                f"GiB; at most {MAX_ARRAY_BYTES / 2**30:.0f} GiB per array"
            )
        data = bytearray(member.nbytes)
        with self.archive.open(member.info) as handle:
            handle.read(member.offset)
            filled = 0
            while filled < member.nbytes:
                chunk = handle.read(min(1 << 24, member.nbytes - filled))
                if not chunk:
                    raise ReferenceSetError(f"{self.where}[{name!r}] is truncated")
                data[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        flat = np.frombuffer(data, dtype=member.dtype)
        array = flat.reshape(member.shape, order="F" if member.fortran else "C")
        return array.astype(member.dtype.newbyteorder("="), order="C", copy=False)  # keeps 0-d arrays 0-d


def open_npz(handle: BinaryIO, where: str) -> Npz:
    """:class:`Npz` of ``handle``; any failure to read the archive or a header is a :class:`ReferenceSetError`."""
    try:
        return Npz(handle, where)
    except ReferenceSetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as error:
        raise ReferenceSetError(f"{where} is not a readable .npz of plain arrays: {error}") from error


def read_member(npz: Npz, name: str) -> Any:
    """:meth:`Npz.read`, with any failure to read the data a :class:`ReferenceSetError` naming the member."""
    try:
        return npz.read(name)
    except ReferenceSetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as error:
        raise ReferenceSetError(f"{npz.where}[{name!r}] cannot be read: {error}") from error


def floating_member(npz: Npz, name: str, shape: str, ok: bool) -> Tensor:
    """A real floating-point member of the declared ``shape`` (checked from its header first), as a tensor."""
    member = npz.members[name]
    where = f"{npz.where}[{name!r}]"
    if member.dtype.kind != "f" or member.dtype.itemsize > 8:
        raise ReferenceSetError(f"{where} has dtype {member.dtype}; expected real floating point (float16/32/64)")
    if not ok:
        raise ReferenceSetError(f"{where} has shape {member.shape}; expected {shape}")
    tensor = torch.from_numpy(read_member(npz, name))
    check_finite(tensor, where)
    return tensor


def npz_num_images(npz: Npz) -> int:
    """The optional ``num_images`` member of a statistics file (one integer ``>= 1``); 0 when there is none."""
    if "num_images" not in npz.members:
        return 0
    member, where = npz.members["num_images"], f"{npz.where}['num_images']"
    if member.dtype.kind not in "iu" or math.prod(member.shape) != 1:
        raise ReferenceSetError(f"{where} is {member.dtype} of shape {member.shape}; expected one integer")
    count = int(read_member(npz, "num_images").reshape(()))
    if count < 1:
        raise ReferenceSetError(f"{where} is {count}; expected the number of images, >= 1")
    return count


def images_member(npz: Npz, name: str) -> Tensor:
    """An images member as ``(N, C, H, W)``: float in [-1, 1] (rankplug sample) or uint8 NCHW / NHWC."""
    member, where = npz.members[name], f"{npz.where}[{name!r}]"
    shape = member.shape
    if len(shape) != 4:
        raise ReferenceSetError(f"{where} has shape {shape}; expected (N, C, H, W) or (N, H, W, C)")
    channels_last = shape[1] not in (1, 3) and shape[3] in (1, 3)
    height, width = (shape[1], shape[2]) if channels_last else (shape[2], shape[3])
    if not channels_last and shape[1] not in (1, 3):
        raise ReferenceSetError(f"{where} has shape {shape}; expected 1 or 3 channels")
    if height * width > MAX_IMAGE_PIXELS or height == 0 or width == 0:
        raise ReferenceSetError(f"{where} has images of {height} x {width}; expected 1 to {MAX_IMAGE_PIXELS} pixels")
    if shape[0] < 2:
        raise ReferenceSetError(f"{where} holds {shape[0]} image; expected N >= 2")
    if member.dtype != "uint8" and (member.dtype.kind != "f" or member.dtype.itemsize > 8):
        raise ReferenceSetError(f"{where} has dtype {member.dtype}; expected uint8, or float in [-1, 1]")
    tensor = torch.from_numpy(read_member(npz, name))
    if channels_last:
        tensor = tensor.permute(0, 3, 1, 2)
    if tensor.is_floating_point():
        if not bool(torch.isfinite(tensor).all()):
            raise ReferenceSetError(f"{where} holds NaN or infinite values; float images must be in [-1, 1]")
        low, high = float(tensor.min()), float(tensor.max())
        if low < -1.001 or high > 1.001:
            raise ReferenceSetError(f"{where} has values in [{low:.4g}, {high:.4g}]; float images must be in [-1, 1]")
    return tensor


# ---------------------------------------------------------------------------------------------------------------
# Image folders, tensors and datasets, as uint8 RGB batches.


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` at any depth, hidden ones skipped, in sorted order; at least one."""
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise ReferenceSetError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) at any depth")
    return files


def read_image(path: Path) -> Tensor:
    """One image file as uint8 RGB ``(3, H, W)``, decoded as the training loader decodes it (16-bit grey scaled)."""
    import numpy as np
    from PIL import Image

    Image.init()
    try:
        # Image.open reads the header only: the size is known before a single pixel is decoded.
        with Image.open(path, formats=[name for name in _PIL_FORMATS if name in Image.OPEN]) as header:
            width, height = header.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ReferenceSetError(f"{path} cannot be read as an image: {error}") from error
    if width * height > MAX_IMAGE_PIXELS:
        raise ReferenceSetError(
            f"{path} is {width} x {height} pixels; a reference image may have at most {MAX_IMAGE_PIXELS} "
            f"(resize the reference set to the generator's resolution first)"
        )
    try:
        picture = open_image(path, "RGB")
    except DataFileError as error:
        raise ReferenceSetError(str(error)) from error
    return torch.from_numpy(np.array(picture)).permute(2, 0, 1)


def folder_batches(files: list[Path], size: int) -> Iterator[Tensor]:
    """uint8 RGB batches of the files in order; a batch ends early where the image size changes."""
    batch: list[Tensor] = []
    for path in files:
        image = read_image(path)
        if batch and (image.shape != batch[0].shape or len(batch) == size):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)


def checked_pixels(images: Tensor, where: str) -> Tensor:
    """:func:`to_uint8` of ``images``, its refusals a :class:`ReferenceSetError` naming ``where``."""
    try:
        return to_uint8(images)
    except (TypeError, ValueError) as error:
        raise ReferenceSetError(f"{where}: {error}") from None


def dataset_batches(dataset: Any, size: int, where: str) -> Iterator[Tensor]:
    """uint8 RGB batches of ``size`` of a dataset's images (items are images or ``(image, label)`` pairs)."""
    for start in range(0, len(dataset), size):
        items = [dataset[i] for i in range(start, min(start + size, len(dataset)))]
        yield checked_pixels(
            torch.stack([item[0] if isinstance(item, (tuple, list)) else item for item in items]), where
        )


def tensor_batches(images: Tensor, size: int, where: str) -> Iterator[Tensor]:
    """uint8 RGB batches of ``size`` of images ``(N, C, H, W)``."""
    for start in range(0, images.shape[0], size):
        yield checked_pixels(images[start : start + size], where)
