"""Bundle a wheel closure (e.g. ray[serve]) into tar.xz parts small enough to carry to the offline GPU machine.

The benchmark machine has no network: files reach it only as ignored paths of the repository that travel with the
working tree, at most 64 MiB per call (a path already sent stays there while the machine is warm). A closure such as
`ray[serve]` is 133 MB of wheels, so this script

1. takes a directory of wheels (or fetches them with `pip download` for `--download SPEC ...`), leaves out the
   distributions the machine already has (`--skip`, names compared per PEP 503),
2. unpacks every wheel into one site-packages-like tree (`.data/purelib` and `.data/platlib` to the root,
   `.data/scripts` to `bin/`, `*.dist-info` kept so importlib.metadata works; file modes kept, Ray's raylet and
   gcs_server are executables) and drops the `--prune` paths,
3. writes the tree as `bundle-partN.tar.xz` parts of at most `--max-mib` MiB each, every part an independent
   tar.xz (a file is never split across parts), plus `bundle-manifest.json`,
4. prints the command that unpacks them on the machine.

    python benchmarks/device_bundle.py /tmp/raywhl/closure                  # parts in .carry/ of the repo
    python benchmarks/device_bundle.py --download "ray[serve]==2.60.0" --out .carry
    python benchmarks/device_bundle.py WHEELS --skip numpy torch --prune ray/jars "ray/**/*.map"

The default prune list is what Ray Serve on one node does not import (checked against ray 2.60.0): ray/serve,
ray/_private, ray/util and ray/dashboard reach ray.data / ray.train only lazily (inside the dashboard's data and
train endpoints) or in docstrings, and ray.tune / ray.air / ray.rllib / the Java jars not at all. The dashboard's
web build is kept (the dashboard head refuses to start on Linux without client/build), only its source maps go;
ray/llm is kept too (ray.serve.llm imports it). With these, ray[serve] 2.60.0 less the default --skip is one
42.6 MiB part (3769 files, 244 MiB raw; plain `tar | xz -9` of the same tree: 47.0 MiB).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import email.parser
import functools
import json
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable, NamedTuple, Sequence

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
PART_PREFIX = "bundle-part"
PART_SUFFIX = ".tar.xz"
MANIFEST = "bundle-manifest.json"

# Already in the torch image of the benchmark machine; pyyaml deliberately is not (the image lacks it).
DEFAULT_SKIP = ("numpy", "msgpack", "cryptography", "cffi", "pycparser", "click", "rich", "networkx", "torch",
                "packaging", "typing_extensions", "filelock", "jinja2", "markupsafe", "sympy", "mpmath", "fsspec",
                "setuptools")
# See the module docstring for why each is safe for Ray Serve on one node.
DEFAULT_PRUNE = ("ray/jars", "ray/rllib", "ray/data", "ray/tune", "ray/train", "ray/air",
                 "ray/dashboard/client/build/**/*.map")
PIP_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "any")
# Tar's end of archive (two zero blocks), written as the last xz stream of every part.
TAR_END = b"\0" * (2 * tarfile.BLOCKSIZE)
# liblzma's dictionary size per preset: a smaller dictionary than the stream needs changes nothing but memory.
_PRESET_DICT = (256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20, 8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20)


def device_path(out: Path | str) -> str:
    """`out` as the device sees it: relative to the repository root when inside it (the command runs there);
    otherwise as given (it has to be inside the repository, and ignored, to be carried at all)."""
    try:
        return Path(out).resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(out)


def unpack_command(out: str) -> str:
    """The device-side command: every part is a whole tar.xz, so extracting them one after another is the tree."""
    glob = f"{shlex.quote(out.rstrip('/'))}/{PART_PREFIX}*{PART_SUFFIX}"
    return (f'mkdir -p /tmp/site && for f in {glob}; do tar -C /tmp/site -xJf "$f"; done; '
            "export PYTHONPATH=/tmp/site:$PYTHONPATH")


# --- wheels ------------------------------------------------------------------------------------------------------


def normalize(name: str) -> str:
    """PEP 503 form, so `typing_extensions`, `Typing-Extensions` and `typing.extensions` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_distribution(filename: str) -> str:
    """The distribution name of a wheel file name `{name}-{ver}(-{build})?-{py}-{abi}-{plat}.whl` (PEP 427)."""
    if not filename.endswith(".whl"):
        raise SystemExit(f"not a wheel: expected a file name ending in .whl, found {filename!r}")
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6) or not all(parts):
        raise SystemExit(f"not a wheel name: expected NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl, found {filename!r}")
    return parts[0]


def list_wheels(directory: Path) -> list[Path]:
    """The wheels of `directory`, sorted; anything else there is an error (an sdist would be silently missing)."""
    if not directory.exists():
        raise SystemExit(f"wheel directory {directory} does not exist")
    if not directory.is_dir():
        raise SystemExit(f"expected a directory of wheels at {directory}, found a file")
    entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    others = [p.name for p in entries if not (p.is_file() and p.name.endswith(".whl"))]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise SystemExit(f"expected only .whl files in {directory}, found {shown} "
                         "(sdists cannot be unpacked; download with --only-binary=:all:)")
    if not entries:
        raise SystemExit(f"no wheels in {directory}")
    seen: dict[str, str] = {}
    for p in entries:
        name = normalize(wheel_distribution(p.name))
        if name in seen:
            raise SystemExit(f"two wheels of {name} in {directory}: {seen[name]} and {p.name}; keep one")
        seen[name] = p.name
    return entries


def filter_wheels(wheels: Iterable[Path], skip: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """(kept, skipped): a wheel is skipped when its distribution's PEP 503 name is in `skip`."""
    names = {normalize(s) for s in skip}
    kept: list[Path] = []
    skipped: list[Path] = []
    for w in wheels:
        (skipped if normalize(wheel_distribution(w.name)) in names else kept).append(w)
    return kept, skipped


def requirements_on(metadata: dict[str, str], names: Iterable[str]) -> dict[str, list[str]]:
    """{skipped name: ["wheel: Requires-Dist", ...]}: the versions the machine's own copies have to satisfy."""
    wanted = {normalize(n) for n in names}
    found: dict[str, list[str]] = {}
    for wheel, text in sorted(metadata.items()):
        for req in email.parser.HeaderParser().parsestr(text).get_all("Requires-Dist") or []:
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if m and normalize(m.group(1)) in wanted:
                found.setdefault(normalize(m.group(1)), []).append(f"{wheel}: {req.strip()}")
    return found


def pip_download_command(specs: Sequence[str], dest: Path, python_version: str = "3.12") -> list[str]:
    """`pip download` of binary wheels for the machine (CPython `python_version`, x86-64 manylinux), not for here."""
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", python_version,
           "--implementation", "cp"]
    for plat in PIP_PLATFORMS:
        cmd += ["--platform", plat]
    return [*cmd, *specs, "-d", str(dest)]


def download(specs: Sequence[str], dest: Path, python_version: str) -> None:
    """Run pip download; its own output says what failed, we only say that it did."""
    dest.mkdir(parents=True, exist_ok=True)
    rc = subprocess.run(pip_download_command(specs, dest, python_version)).returncode
    if rc != 0:
        raise SystemExit(f"pip download of {' '.join(specs)} into {dest} failed with exit code {rc} (see above)")


# --- the tree ----------------------------------------------------------------------------------------------------


def install_path(member: str) -> str | None:
    """Where a wheel member goes in a site-packages tree, or None for what a PYTHONPATH tree has no place for.

    `X.data/purelib/...` and `X.data/platlib/...` go to the root, `X.data/scripts/...` to `bin/`; `X.data/data`
    and `X.data/headers` (licences, C headers, meant for sys.prefix) are dropped.
    """
    parts = member.split("/")
    if len(parts) < 3 or not parts[0].endswith(".data"):
        return member
    scheme, rest = parts[1], "/".join(parts[2:])
    if scheme in ("purelib", "platlib"):
        return rest
    return f"bin/{rest}" if scheme == "scripts" else None


def _check_member(wheel: Path, name: str) -> None:
    """Refuse paths that would land outside the tree (absolute, `..`): a wheel is a zip anyone can write."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name:
        raise SystemExit(f"{wheel.name}: member {name!r} would be written outside the bundle tree")


@functools.lru_cache(maxsize=None)
def _prune_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex: `*` and `?` stay within one path component, `**/` is any number of directories (none
    included), any other `**` anything; what is under a matching directory matches too."""
    tokens = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    glob = {"**/": "(?:[^/]+/)*", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(glob.get(t, re.escape(t)) for t in tokens) + r"(?:/.*)?\Z")


def check_prune(patterns: Iterable[str]) -> list[str]:
    """Patterns as given, less `./` and trailing `/`; absolute or `..` patterns are errors."""
    clean = []
    for pat in patterns:
        p = pat.strip().removeprefix("./").rstrip("/")
        if not p or p.startswith("/") or ".." in p.split("/"):
            raise SystemExit(f"--prune expects a path relative to site-packages like ray/jars, found {pat!r}")
        clean.append(p)
    return clean


def prune_match(path: str, patterns: Sequence[str]) -> str | None:
    """The first pattern that drops `path`: a plain pattern drops that path and everything under it
    (`ray/jars` drops `ray/jars/a.jar` but not `ray/jarsx`); one with `*`, `?` or `**` is a glob, matched
    whole, that also drops what is under a matching directory."""
    for pat in patterns:
        if "*" in pat or "?" in pat:
            if _prune_regex(pat).match(path):
                return pat
        elif path == pat or path.startswith(pat + "/"):
            return pat
    return None


class Tree:
    """What unpacking wrote and left out: the manifest's raw material.

    (A plain class, not a dataclass: the tests load this file without registering it in sys.modules.)
    """

    def __init__(self, root: Path, prune: Iterable[str] = ()) -> None:
        self.root = root
        self.files: dict[str, str] = {}  # tree path -> the wheel it came from
        self.pruned: dict[str, dict[str, int]] = {p: {"files": 0, "bytes": 0} for p in prune}
        self.dropped: list[str] = []  # "wheel: member" of .data/data and .data/headers
        self.metadata: dict[str, str] = {}  # wheel -> its METADATA text


def _open_wheel(wheel: Path) -> zipfile.ZipFile:
    """The wheel as a zip with a `*.dist-info/METADATA`, or a clear error saying which file is not."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise SystemExit(f"{wheel}: expected a wheel (a zip file), could not open it: {e}") from None
    if not any(re.fullmatch(r"[^/]+\.dist-info/METADATA", n) for n in zf.namelist()):
        zf.close()
        raise SystemExit(f"{wheel}: expected a wheel with NAME-VERSION.dist-info/METADATA, found none")
    return zf


def _write_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Extract one member keeping its Unix mode (zipfile.extract drops it) and its date."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    mode = (info.external_attr >> 16) & 0o777  # no setuid/setgid from a zip
    os.chmod(dest, (mode or 0o644) | 0o600)
    ts = zipfile_time(info)
    if ts is not None:
        os.utime(dest, (ts, ts))


def zipfile_time(info: zipfile.ZipInfo) -> float | None:
    """A member's date as a timestamp (None if the zip holds no valid date); pinned dates (1980) are kept: they
    make the bundle reproducible."""
    try:
        return datetime.datetime(*info.date_time, tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def _same_content(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> bool:
    """Whether a path two wheels both install holds the same bytes (then the clash is harmless)."""
    return dest.stat().st_size == info.file_size and zf.read(info) == dest.read_bytes()


def unpack(wheels: Sequence[Path], root: Path, prune: Sequence[str]) -> Tree:
    """Unpack `wheels` into `root` as one site-packages tree, leaving out what `prune` matches.

    Two wheels installing one path with different bytes is an error: which one wins would be an accident.
    """
    tree = Tree(root, prune)
    for wheel in wheels:
        with _open_wheel(wheel) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                _check_member(wheel, info.filename)
                if re.fullmatch(r"[^/]+\.dist-info/METADATA", info.filename):
                    tree.metadata[wheel.name] = zf.read(info).decode("utf-8", "replace")
                target = install_path(info.filename)
                if target is None:
                    tree.dropped.append(f"{wheel.name}: {info.filename}")
                    continue
                pat = prune_match(target, prune)
                if pat is not None:
                    tree.pruned[pat]["files"] += 1
                    tree.pruned[pat]["bytes"] += info.file_size
                    continue
                dest = root / target
                if target in tree.files:
                    if not _same_content(zf, info, dest):
                        raise SystemExit(f"{target} is installed by both {tree.files[target]} and {wheel.name} "
                                         "with different contents; leave one of them out with --skip")
                    continue
                _write_member(zf, info, dest)
                tree.files[target] = wheel.name
    return tree


# --- parts -------------------------------------------------------------------------------------------------------
#
# How parts stay under the limit, measured rather than estimated: the .xz format allows several streams one after
# another in a file, and `xz -d` (so `tar -xJf`) and Python's lzma decompress them as one byte stream. The tar
# byte stream of a set of files is position-independent (a member is its header, its data and padding to 512
# bytes, and says nothing of where it sits), so it can be cut at member boundaries into *segments*, each
# compressed on its own into a complete xz stream whose size is then known exactly. A part is some whole segments
# followed by a tiny stream holding tar's end-of-archive blocks, so its size is the sum of measured sizes, and the
# segments are bin-packed into parts (first fit, largest first) without compressing anything twice. Segments cost
# some ratio against one solid stream (the dictionary restarts); --segment-mib trades that against how tightly
# parts fill up. A segment too big for any part is split in halves, down to single files; a single file that
# alone compresses past the limit is an error.
#
# Order matters as much as the cut: x86 executables go first, largest first, in segments of their own with xz's
# BCJ x86 filter. Ray's gcs_server and raylet are 8.5 + 6.7 MB compressed apart but 11.7 MB side by side in one
# dictionary (they link the same libraries), 11.1 MB with the filter.


class Entry(NamedTuple):
    """A file of the tree as the packer sees it: its path, size and kind ("x86" executable code, or "data")."""
    path: str
    size: int
    kind: str


def file_kind(path: Path) -> str:
    """The kind of a file: "x86" for x86 / x86-64 ELF (the BCJ filter helps it and only it), else "data"."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return "data"
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return "x86" if machine in (3, 62) else "data"  # EM_386, EM_X86_64


def scan(root: Path, paths: Iterable[str]) -> list[Entry]:
    """The entries of `paths` under `root`."""
    return [Entry(p, (root / p).stat().st_size, file_kind(root / p)) for p in paths]


def solid_order(entries: Iterable[Entry]) -> list[Entry]:
    """x86 code first, largest first (big binaries of one project share code); then the rest by suffix and path,
    like with like (.py with .py, .pyi with .pyi) within one dictionary."""
    return sorted(entries, key=lambda e: (0, -e.size, e.path) if e.kind == "x86"
                  else (1, PurePosixPath(e.path).suffix, e.path))


def plan_segments(entries: Sequence[Entry], segment_bytes: int) -> list[list[Entry]]:
    """Cut the ordered entries into runs of at most `segment_bytes` raw bytes (a bigger file alone), and wherever
    the kind changes, so that each segment gets one filter chain."""
    segments: list[list[Entry]] = []
    current: list[Entry] = []
    filled = 0
    for e in entries:
        if current and (filled + e.size > segment_bytes or e.kind != current[-1].kind):
            segments.append(current)
            current, filled = [], 0
        current.append(e)
        filled += e.size
    if current:
        segments.append(current)
    return segments


def tar_member(root: Path, rel: str) -> bytes:
    """One file as tar bytes: PAX header (long names stay exact), data, zero padding to a 512-byte block."""
    path = root / rel
    st = path.stat()
    info = tarfile.TarInfo(rel)
    info.size, info.mode, info.mtime = st.st_size, stat.S_IMODE(st.st_mode), int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    data = path.read_bytes()
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8") + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def xz_stream(chunks: Iterable[bytes], raw_size: int, preset: int, kind: str = "data") -> bytes:
    """A complete xz stream of `chunks`; the dictionary is no larger than the data (same output, less memory)."""
    dict_size = min(_PRESET_DICT[preset], max(1 << 16, raw_size))
    filters = [{"id": lzma.FILTER_X86}] if kind == "x86" else []
    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                               filters=[*filters, {"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": dict_size}])
    out = [comp.compress(c) for c in chunks]
    out.append(comp.flush())
    return b"".join(out)


class Segment(NamedTuple):
    """Whole files of the tree as one complete xz stream; `raw` is its tar bytes."""
    files: list[Entry]
    raw: int
    xz: bytes


def compress_segment(root: Path, entries: Sequence[Entry], preset: int) -> Segment:
    """Read and compress one segment, a file at a time (lzma releases the GIL: segments compress in threads)."""
    raw = [0]

    def members() -> Iterable[bytes]:
        for e in entries:
            m = tar_member(root, e.path)
            raw[0] += len(m)
            yield m

    kinds = {e.kind for e in entries}
    xz = xz_stream(members(), sum(e.size for e in entries) + 1024 * len(entries), preset,
                   kinds.pop() if len(kinds) == 1 else "data")
    return Segment(list(entries), raw[0], xz)


def fit_segment(root: Path, seg: Segment, capacity: int, preset: int) -> list[Segment]:
    """`seg`, or its halves (recursively) where it does not fit in a part; one file that cannot is an error."""
    if len(seg.xz) <= capacity:
        return [seg]
    if len(seg.files) == 1:
        raise SystemExit(f"{root / seg.files[0].path} compresses to {len(seg.xz) / MIB:.2f} MiB on its own, over "
                         f"the {capacity / MIB:.2f} MiB a part can hold: raise --max-mib or --prune it")
    half = len(seg.files) // 2
    return [s for part in (seg.files[:half], seg.files[half:])
            for s in fit_segment(root, compress_segment(root, part, preset), capacity, preset)]


def pack_parts(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `sizes` grouped so each group sums to at most `capacity`: first fit, largest first.

    Each group keeps its indices in ascending order, so a part's files stay in tree order.
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        if sizes[i] > capacity:
            raise ValueError(f"item {i} of {sizes[i]} bytes is over the capacity of {capacity} bytes")
        for b, left in enumerate(room):
            if sizes[i] <= left:
                bins[b].append(i)
                room[b] -= sizes[i]
                break
        else:
            bins.append([i])
            room.append(capacity - sizes[i])
    return sorted((sorted(b) for b in bins), key=lambda b: b[0])


def build_segments(root: Path, files: Iterable[str], *, max_bytes: int, segment_bytes: int, preset: int,
                   jobs: int) -> list[Segment]:
    """All files as segments that each fit in a part beside tar's end stream."""
    capacity = max_bytes - len(xz_stream([TAR_END], len(TAR_END), preset))
    planned = plan_segments(solid_order(scan(root, files)), segment_bytes)
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        done = list(pool.map(lambda seg: compress_segment(root, seg, preset), planned))
    return [s for seg in done for s in fit_segment(root, seg, capacity, preset)]


# --- output ------------------------------------------------------------------------------------------------------


def _umask() -> int:
    """The process umask (reading it means setting it; this runs in the main thread only)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Temp file in the same directory, then os.replace: a reader (or a carry) never sees half a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would follow the file to the machine
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def part_name(n: int) -> str:
    """bundle-part1.tar.xz, ...: the glob in the unpack command picks them all up, in any order."""
    return f"{PART_PREFIX}{n}{PART_SUFFIX}"


def write_parts(out: Path, segments: Sequence[Segment], max_bytes: int, preset: int) -> list[dict]:
    """Write the parts, then remove parts of an earlier, larger bundle (the unpack glob would take them too)."""
    end = xz_stream([TAR_END], len(TAR_END), preset)
    groups = pack_parts([len(s.xz) for s in segments], max_bytes - len(end))
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for n, group in enumerate(groups, 1):
        segs = [segments[i] for i in group]
        write_atomic(out / part_name(n), [*(s.xz for s in segs), end])
        files = [e.path for s in segs for e in s.files]
        parts.append({"name": part_name(n), "bytes": sum(len(s.xz) for s in segs) + len(end),
                      "raw_bytes": sum(s.raw for s in segs), "files": len(files),
                      "top_level": sorted({f.split("/")[0] for f in files})})
    keep = {p["name"] for p in parts}
    for old in out.glob(f"{PART_PREFIX}*{PART_SUFFIX}"):
        if old.name not in keep:
            old.unlink()
    return parts


def manifest(parts: list[dict], tree: Tree, kept: Sequence[Path], skipped: Sequence[Path], skip: Sequence[str],
             prune: Sequence[str], max_mib: float, out: str) -> dict:
    """What the bundle holds and what it left out, so a failed import on the machine can be traced to a cause."""
    skipped_names = {normalize(wheel_distribution(w.name)) for w in skipped}
    return {
        "parts": parts,
        "max_mib": max_mib,
        "total_bytes": sum(p["bytes"] for p in parts),
        "total_raw_bytes": sum(p["raw_bytes"] for p in parts),
        "files": len(tree.files),
        "wheels": [w.name for w in kept],
        "skip": list(skip),
        "skipped": [w.name for w in skipped],
        "skip_not_in_closure": sorted({normalize(s) for s in skip} - skipped_names),
        "requirements_on_skipped": requirements_on(tree.metadata, skip),
        "prune": tree.pruned,
        "dropped_data_files": tree.dropped,
        "unpack_command": unpack_command(out),
    }


# --- CLI ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; see the module docstring for the whole story."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheels", nargs="?", type=Path, help="directory of wheels (with --download: where they go, "
                    "default a temporary directory)")
    ap.add_argument("--download", nargs="+", metavar="SPEC", help='pip download these first, e.g. "ray[serve]==2.60.0"')
    ap.add_argument("--python-version", default="3.12", help="the machine's Python, for --download (default 3.12)")
    ap.add_argument("--skip", nargs="*", default=list(DEFAULT_SKIP), metavar="NAME",
                    help="distributions the machine already has; replaces the default list, "
                         "an empty --skip keeps all (default: %(default)s)")
    ap.add_argument("--prune", nargs="*", default=list(DEFAULT_PRUNE), metavar="PKG/PATH",
                    help="tree paths to leave out, a plain path with all under it or a glob with * ? **; replaces "
                         "the default list, an empty --prune keeps all (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=REPO / ".carry",
                    help="output directory for the parts and manifest (default: .carry in the repository root)")
    ap.add_argument("--max-mib", type=float, default=60.0, help="largest part in MiB (default 60)")
    ap.add_argument("--segment-mib", type=float, default=128.0,
                    help="raw MiB per independently compressed segment (default 128; larger: better ratio, "
                         "coarser fill of the parts)")
    ap.add_argument("--preset", type=int, default=9, choices=range(10), help="xz preset (default 9)")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                    help="segments compressed at once, each thread ~0.7 GiB at preset 9 (default min(4, CPUs))")
    ap.add_argument("--tree", type=Path, help="unpack into this directory and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    if args.wheels is None and not args.download:
        ap.error("give a directory of wheels, or --download SPEC ...")
    if args.max_mib <= 0 or args.segment_mib <= 0:
        ap.error(f"--max-mib and --segment-mib must be positive, found {args.max_mib} and {args.segment_mib}")
    return args


def bundle(args: argparse.Namespace, wheel_dir: Path, tree_root: Path) -> dict:
    """Unpack, pack, write; returns the manifest (also written as bundle-manifest.json)."""
    prune = check_prune(args.prune)
    kept, skipped = filter_wheels(list_wheels(wheel_dir), args.skip)
    if not kept:
        raise SystemExit(f"every wheel in {wheel_dir} is in --skip; nothing to bundle")
    tree = unpack(kept, tree_root, prune)
    max_bytes = int(args.max_mib * MIB)
    segments = build_segments(tree_root, list(tree.files), max_bytes=max_bytes,
                              segment_bytes=int(args.segment_mib * MIB), preset=args.preset, jobs=args.jobs)
    parts = write_parts(args.out, segments, max_bytes, args.preset)
    result = manifest(parts, tree, kept, skipped, args.skip, prune, args.max_mib, device_path(args.out))
    write_atomic(args.out / MANIFEST, [json.dumps(result, indent=1).encode()])
    return result


def _short(wheel: str) -> str:
    """NAME-VERSION of a wheel file name, for messages a person reads."""
    return "-".join(wheel.split("-")[:2])


def unconditional(reqs: Iterable[str]) -> list[str]:
    """The distinct requirements, less those only an extra asks for: what a plain install really needs."""
    specs = (r.split(": ", 1)[1] for r in reqs)
    return sorted({r for r in specs if "extra" not in r.partition(";")[2]})


def report(result: dict, out: str) -> None:
    """What was written, what was left out, what the machine's own copies must satisfy, and how to unpack."""
    for p in result["parts"]:
        print(f"{out}/{p['name']}: {p['bytes'] / MIB:.2f} MiB ({p['bytes']} bytes), {p['files']} files, "
              f"{p['raw_bytes'] / MIB:.1f} MiB raw")
    print(f"total {result['total_bytes'] / MIB:.2f} MiB in {len(result['parts'])} part(s), {result['files']} files "
          f"from {len(result['wheels'])} wheels")
    print(f"skipped (on the machine): {', '.join(_short(w) for w in result['skipped']) or '-'}")
    for pat, n in result["prune"].items():
        note = "" if n["files"] else "  (matched nothing: typo?)"
        print(f"pruned {pat}: {n['files']} files, {n['bytes'] / MIB:.1f} MiB{note}")
    needs = {name: unconditional(reqs) for name, reqs in result["requirements_on_skipped"].items()}
    if any(needs.values()):
        print("the machine's own copies of skipped distributions must satisfy (all in the manifest):")
        for name, reqs in needs.items():
            if reqs:
                print(f"  {name}: {'; '.join(reqs)}")
    print("\non the device (in the repository root):\n" + result["unpack_command"])
    if any("bin" in p["top_level"] for p in result["parts"]):
        print("# console scripts (py-spy, ...) are in /tmp/site/bin: export PATH=/tmp/site/bin:$PATH")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="device-bundle-") as tmp:
        wheel_dir = args.wheels or Path(tmp) / "wheels"
        if args.download:
            download(args.download, wheel_dir, args.python_version)
        if args.tree is not None and args.tree.exists() and any(args.tree.iterdir()):
            raise SystemExit(f"--tree {args.tree} is not empty; expected a new or empty directory")
        tree_root = args.tree or Path(tmp) / "tree"
        tree_root.mkdir(parents=True, exist_ok=True)
        result = bundle(args, wheel_dir, tree_root)
    report(result, str(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
