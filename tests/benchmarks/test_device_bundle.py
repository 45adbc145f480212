"""benchmarks/device_bundle.py: wheels become one site-packages tree, pruned, written as independent tar.xz parts
that each stay under the size limit by measured (not guessed) compressed size."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import lzma
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "device_bundle.py"
_spec = importlib.util.spec_from_file_location("bench_device_bundle", _PATH)
device_bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(device_bundle)

KIB = 1 << 10


def make_wheel(directory: Path, name: str, version: str = "1.0", files: dict[str, bytes] | None = None,
               requires: tuple[str, ...] = (), modes: dict[str, int] | None = None) -> Path:
    """A minimal wheel: `files` (member path -> bytes) plus NAME-VERSION.dist-info/{METADATA,WHEEL,RECORD}."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    members = {**(files or {f"{dist}/__init__.py": b"VALUE = 1\n"}), f"{info}/METADATA": metadata.encode(),
               f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    members[f"{info}/RECORD"] = "".join(f"{m},,\n" for m in members).encode()
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zi = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = ((modes or {}).get(member, 0o644) | 0o100000) << 16
            zf.writestr(zi, data)
    return path


def extract_all(parts: list[Path], dest: Path) -> None:
    """Extract parts one by one, each on its own, the way the device command does."""
    dest.mkdir(parents=True, exist_ok=True)
    for p in parts:
        with tarfile.open(p, "r:xz") as tf:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                tf.extractall(dest, filter="data")
            else:
                tf.extractall(dest)


def tree_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- names and lists --------------------------------------------------------------------------------------------


def test_names_are_compared_in_pep503_form():
    assert device_bundle.normalize("Typing.Extensions") == device_bundle.normalize("typing_extensions") \
        == "typing-extensions"
    assert device_bundle.wheel_distribution("ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl") == "ray"
    assert device_bundle.wheel_distribution("pkg-1.0-1build-py3-none-any.whl") == "pkg"


def test_a_file_that_is_not_a_wheel_name_is_an_error_naming_it():
    with pytest.raises(SystemExit, match="foo.tar.gz"):
        device_bundle.wheel_distribution("foo.tar.gz")
    with pytest.raises(SystemExit, match="NAME-VERSION.*found 'a-b.whl'"):
        device_bundle.wheel_distribution("a-b.whl")


def test_skip_filters_by_normalised_distribution_name(tmp_path):
    wheels = [make_wheel(tmp_path, n) for n in ("typing_extensions", "PyYAML", "fastapi")]
    kept, skipped = device_bundle.filter_wheels(wheels, ["Typing-Extensions", "numpy"])
    assert [w.name for w in skipped] == ["typing_extensions-1.0-py3-none-any.whl"]
    assert sorted(device_bundle.wheel_distribution(w.name) for w in kept) == ["PyYAML", "fastapi"]
    assert "pyyaml" not in device_bundle.DEFAULT_SKIP and "typing_extensions" in device_bundle.DEFAULT_SKIP


def test_listing_errors_say_what_was_expected_and_where(tmp_path):
    with pytest.raises(SystemExit, match=f"{tmp_path / 'nope'} does not exist"):
        device_bundle.list_wheels(tmp_path / "nope")
    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit, match="expected a directory of wheels"):
        device_bundle.list_wheels(tmp_path / "f")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no wheels in"):
        device_bundle.list_wheels(empty)
    make_wheel(empty, "a")
    (empty / "b-1.0.tar.gz").write_bytes(b"sdist")
    with pytest.raises(SystemExit, match=r"expected only \.whl files in .*found b-1\.0\.tar\.gz"):
        device_bundle.list_wheels(empty)
    (empty / "b-1.0.tar.gz").unlink()
    make_wheel(empty, "A", version="2.0")
    with pytest.raises(SystemExit, match="two wheels of a in .*: A-2.0-py3-none-any.whl and a-1.0"):
        device_bundle.list_wheels(empty)


def test_a_corrupt_or_metadata_less_wheel_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match="bad-1.0-py3-none-any.whl: expected a wheel"):
        device_bundle.unpack([bad], tmp_path / "t", [])
    bare = tmp_path / "bare-1.0-py3-none-any.whl"
    with zipfile.ZipFile(bare, "w") as zf:
        zf.writestr("bare/__init__.py", "")
    with pytest.raises(SystemExit, match="dist-info/METADATA, found none"):
        device_bundle.unpack([bare], tmp_path / "t", [])


def test_requirements_on_skipped_distributions_are_collected_and_extras_left_out_of_the_summary():
    meta = {"p.whl": "Name: p\nRequires-Dist: typing-extensions>=4.16.0\nRequires-Dist: idna\n\nbody",
            "q.whl": "Name: q\nRequires-Dist: Typing_Extensions~=4.12; python_version < '3.13'\n"}
    assert device_bundle.requirements_on(meta, ["typing_extensions"]) == {"typing-extensions": [
        "p.whl: typing-extensions>=4.16.0", "q.whl: Typing_Extensions~=4.12; python_version < '3.13'"]}
    reqs = ["a: numpy>=1.20; extra == 'serve'", "b: numpy>=1", "c: numpy>=1"]
    assert device_bundle.unconditional(reqs) == ["numpy>=1"]


def test_the_device_sees_the_output_relative_to_the_repository_root(tmp_path):
    assert device_bundle.device_path(device_bundle.REPO / ".carry") == ".carry"
    assert device_bundle.device_path(tmp_path / "x") == str(tmp_path / "x")
    assert device_bundle.unpack_command(".carry") == (
        'mkdir -p /tmp/site && for f in .carry/bundle-part*.tar.xz; do tar -C /tmp/site -xJf "$f"; done; '
        "export PYTHONPATH=/tmp/site:$PYTHONPATH")


def test_the_pip_command_targets_the_machine_not_this_host(tmp_path):
    cmd = device_bundle.pip_download_command(["ray[serve]==2.60.0"], tmp_path, "3.12")
    assert cmd[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and cmd[cmd.index("--implementation") + 1] == "cp"
    assert [cmd[i + 1] for i, c in enumerate(cmd) if c == "--platform"] == list(device_bundle.PIP_PLATFORMS)
    assert cmd[-3:] == ["ray[serve]==2.60.0", "-d", str(tmp_path)]


# --- tree and prune ---------------------------------------------------------------------------------------------


def test_data_schemes_land_where_a_pythonpath_tree_wants_them():
    assert device_bundle.install_path("x-1.0.data/purelib/x/a.py") == "x/a.py"
    assert device_bundle.install_path("x-1.0.data/platlib/x/_c.so") == "x/_c.so"
    assert device_bundle.install_path("x-1.0.data/scripts/tool") == "bin/tool"
    assert device_bundle.install_path("x-1.0.data/data/LICENSE") is None
    assert device_bundle.install_path("x-1.0.data/headers/x.h") is None
    assert device_bundle.install_path("x/a.py") == "x/a.py"


@pytest.mark.parametrize("path,patterns,want", [
    ("ray/jars/ray.jar", ["ray/jars"], "ray/jars"),
    ("ray/jars", ["ray/jars"], "ray/jars"),
    ("ray/jarsx/a.py", ["ray/jars"], None),
    ("ray/serve/api.py", ["ray/data", "ray/tune"], None),
    ("ray/dashboard/client/build/static/js/main.js.map", ["ray/dashboard/client/build/**/*.map"],
     "ray/dashboard/client/build/**/*.map"),
    ("ray/dashboard/client/build/main.js.map", ["ray/dashboard/client/build/**/*.map"],
     "ray/dashboard/client/build/**/*.map"),
    ("ray/dashboard/client/build/static/js/main.js", ["ray/dashboard/client/build/**/*.map"], None),
    ("pkg/tests/t.py", ["*/tests"], "*/tests"),
    ("pkg/sub/tests/t.py", ["*/tests"], None),
    ("pkg/sub/tests/t.py", ["**/tests"], "**/tests"),
    ("a.b/x", ["a?b"], "a?b"),
    ("a.b/x", ["a.c"], None),
])
def test_prune_patterns(path, patterns, want):
    assert device_bundle.prune_match(path, patterns) == want


def test_prune_patterns_outside_the_tree_are_refused():
    assert device_bundle.check_prune(["./ray/jars/", "ray/air"]) == ["ray/jars", "ray/air"]
    for bad in ("/ray", "ray/../etc", ""):
        with pytest.raises(SystemExit, match="--prune expects a path relative"):
            device_bundle.check_prune([bad])


def test_unpack_keeps_modes_and_dist_info_and_counts_what_it_prunes(tmp_path):
    w = make_wheel(tmp_path, "tool", files={
        "tool/__init__.py": b"", "tool/bin/server": b"\x7fELF" + b"x" * 100, "tool/jars/big.jar": b"j" * 5000,
        "tool-1.0.data/purelib/tool/extra.py": b"E = 1\n", "tool-1.0.data/scripts/tool-cli": b"#!/bin/sh\n",
        "tool-1.0.data/data/LICENSE": b"L"}, modes={"tool/bin/server": 0o755, "tool-1.0.data/scripts/tool-cli": 0o755})
    tree = device_bundle.unpack([w], tmp_path / "t", ["tool/jars"])
    root = tmp_path / "t"
    assert sorted(tree.files) == ["bin/tool-cli", "tool-1.0.dist-info/METADATA", "tool-1.0.dist-info/RECORD",
                                  "tool-1.0.dist-info/WHEEL", "tool/__init__.py", "tool/bin/server", "tool/extra.py"]
    assert os.access(root / "tool/bin/server", os.X_OK) and os.access(root / "bin/tool-cli", os.X_OK)
    assert not os.access(root / "tool/__init__.py", os.X_OK)
    assert tree.pruned == {"tool/jars": {"files": 1, "bytes": 5000}}
    assert tree.dropped == [f"{w.name}: tool-1.0.data/data/LICENSE"]
    assert [d.metadata["Name"] for d in importlib.metadata.distributions(path=[str(root)])] == ["tool"]


def test_two_wheels_writing_one_path_differently_is_an_error(tmp_path):
    a = make_wheel(tmp_path, "a", files={"ns/x.py": b"1"})
    b = make_wheel(tmp_path, "b", files={"ns/x.py": b"2"})
    c = make_wheel(tmp_path, "c", files={"ns/x.py": b"1"})
    device_bundle.unpack([a, c], tmp_path / "ok", [])  # the same bytes twice: harmless
    with pytest.raises(SystemExit, match="ns/x.py is installed by both a-1.0-py3-none-any.whl and b-1.0"):
        device_bundle.unpack([a, b], tmp_path / "clash", [])


def test_a_member_escaping_the_tree_is_refused(tmp_path):
    w = make_wheel(tmp_path, "evil", files={"../outside.py": b""})
    with pytest.raises(SystemExit, match="outside the bundle tree"):
        device_bundle.unpack([w], tmp_path / "t", [])


# --- packing ----------------------------------------------------------------------------------------------------


def test_pack_parts_never_exceeds_the_capacity_and_keeps_order_within_a_part():
    sizes = [50, 40, 30, 30, 20, 10, 60]
    groups = device_bundle.pack_parts(sizes, 100)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    assert all(sum(sizes[i] for i in g) <= 100 and g == sorted(g) for g in groups)
    assert len(groups) == 3  # 240 bytes in bins of 100: first fit decreasing reaches the bound
    with pytest.raises(ValueError, match="over the capacity"):
        device_bundle.pack_parts([101], 100)


def test_segments_cut_at_file_boundaries_and_kind_changes_with_a_big_file_alone():
    E = device_bundle.Entry
    entries = [E("a", 40, "data"), E("b", 40, "data"), E("c", 40, "data"), E("big", 500, "data"), E("d", 10, "data"),
               E("e.so", 10, "x86"), E("f.so", 10, "x86")]
    assert [[e.path for e in s] for s in device_bundle.plan_segments(entries, 100)] == [
        ["a", "b"], ["c"], ["big"], ["d"], ["e.so", "f.so"]]
    assert device_bundle.plan_segments([], 100) == []


def test_x86_code_goes_first_largest_first_then_like_with_like(tmp_path):
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (62).to_bytes(2, "little") + b"\0" * 100
    arm = elf[:18] + (183).to_bytes(2, "little") + elf[20:]
    for name, data in {"small.so": elf, "big.so": elf + b"x" * 50, "arm.so": arm, "a.py": b"", "z.pyi": b"",
                       "b.py": b"", "ELF": b"\x7fELF"}.items():
        (tmp_path / name).write_bytes(data)
    entries = device_bundle.scan(tmp_path, ["a.py", "small.so", "z.pyi", "big.so", "arm.so", "b.py", "ELF"])
    assert {e.path: e.kind for e in entries}["small.so"] == "x86" and entries[4].kind == "data"
    assert [e.path for e in device_bundle.solid_order(entries)] == [
        "big.so", "small.so", "ELF", "a.py", "b.py", "z.pyi", "arm.so"]


def test_concatenated_xz_streams_read_back_as_one_tar(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    for n in ("x", "y"):
        (root / n).write_bytes(n.encode() * 1000)
    seg = [device_bundle.compress_segment(root, device_bundle.scan(root, [n]), 1) for n in ("x", "y")]
    assert seg[0].raw == 512 + 1024 and seg[0].files[0].path == "x"
    blob = seg[0].xz + seg[1].xz + device_bundle.xz_stream([device_bundle.TAR_END], 1024, 1)
    (tmp_path / "p.tar.xz").write_bytes(blob)
    with tarfile.open(tmp_path / "p.tar.xz", "r:xz") as tf:
        assert tf.getnames() == ["x", "y"] and tf.extractfile("y").read() == b"y" * 1000


def test_x86_streams_use_the_bcj_filter_and_still_decompress():
    code = bytes(range(256)) * 64
    x86 = device_bundle.xz_stream([code], len(code), 1, "x86")
    assert lzma.decompress(x86) == code and x86 != device_bundle.xz_stream([code], len(code), 1)


def _bundle_args(out: Path, **kw) -> list[str]:
    opts = {"--out": str(out), "--max-mib": "0.1", "--segment-mib": "0.02", "--preset": "1", "--jobs": "2", **kw}
    return [a for k, v in opts.items() for a in ([k, v] if v is not None else [])]


@pytest.mark.parametrize("segment_mib", ["0.02", "1"])  # "1": one segment too big for a part, halved until it fits
def test_a_bundle_splits_into_parts_under_the_limit_each_extractable_alone(tmp_path, capsys, segment_mib):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    # Random bytes do not compress: 6 x 30 KiB cannot fit in one 0.1 MiB part.
    for k in range(3):
        make_wheel(wheels, f"pkg{k}", files={f"pkg{k}/blob{j}.bin": os.urandom(30 * KIB) for j in range(2)} |
                   {f"pkg{k}/__init__.py": b"X = %d\n" % k * 200})
    make_wheel(wheels, "numpy")
    make_wheel(wheels, "ray", files={"ray/__init__.py": b"", "ray/jars/ray.jar": os.urandom(200 * KIB),
                                     "ray/serve/__init__.py": b"S = 1\n"})
    out = tmp_path / "carry"
    (out / "bundle-part9.tar.xz").parent.mkdir()
    (out / "bundle-part9.tar.xz").write_bytes(b"stale")  # from an earlier, larger bundle
    assert device_bundle.main([str(wheels), *_bundle_args(out, **{"--segment-mib": segment_mib})]) == 0

    parts = sorted(out.glob("bundle-part*.tar.xz"))
    manifest = json.loads((out / "bundle-manifest.json").read_text())
    assert len(parts) >= 2 and [p.name for p in parts] == sorted(p["name"] for p in manifest["parts"])
    assert all(p.stat().st_size <= 0.1 * (1 << 20) for p in parts)
    assert [p["bytes"] for p in manifest["parts"]] == [(out / p["name"]).stat().st_size for p in manifest["parts"]]
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in parts)
    assert manifest["skipped"] == ["numpy-1.0-py3-none-any.whl"]
    assert manifest["prune"]["ray/jars"] == {"files": 1, "bytes": 200 * KIB}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    mode = 0o666 & ~device_bundle._umask()  # as any other new file, not mkstemp's 0600
    assert all(p.stat().st_mode & 0o777 == mode for p in [*parts, out / "bundle-manifest.json"])

    seen: dict[str, bytes] = {}
    for p in parts:  # each part alone is a whole tar.xz, and no file is in two parts
        extract_all([p], tmp_path / p.stem)
        files = tree_files(tmp_path / p.stem)
        assert files and not (files.keys() & seen.keys())
        seen |= files
    assert sum(p["files"] for p in manifest["parts"]) == len(seen) == manifest["files"]
    assert "pkg2/blob1.bin" in seen and "ray/serve/__init__.py" in seen and "ray/jars/ray.jar" not in seen
    assert not any(f.startswith("numpy") for f in seen)
    extract_all(parts, tmp_path / "all")
    assert {d.metadata["Name"] for d in importlib.metadata.distributions(path=[str(tmp_path / "all")])} == {
        "pkg0", "pkg1", "pkg2", "ray"}
    printed = capsys.readouterr().out
    assert f'for f in {out}/bundle-part*.tar.xz; do tar -C /tmp/site -xJf "$f"; done' in printed


@pytest.mark.skipif(shutil.which("tar") is None or shutil.which("xz") is None, reason="needs tar and xz")
def test_the_printed_device_command_works_with_gnu_tar(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (62).to_bytes(2, "little") + os.urandom(10 * KIB)
    make_wheel(wheels, "pkg", files={f"pkg/b{j}.bin": os.urandom(40 * KIB) for j in range(3)} | {"pkg/_c.so": elf},
               modes={"pkg/b0.bin": 0o755})  # _c.so: an x86 segment, through xz's BCJ decoder
    monkeypatch.chdir(tmp_path)
    assert device_bundle.main([str(wheels), *_bundle_args(Path(".carry"))]) == 0
    site = tmp_path / "site"
    cmd = device_bundle.unpack_command(".carry").replace("/tmp/site", str(site))
    subprocess.run(["bash", "-c", cmd], check=True)
    assert sorted(p.name for p in (site / "pkg").iterdir()) == ["_c.so", "b0.bin", "b1.bin", "b2.bin"]
    assert (site / "pkg/_c.so").read_bytes() == elf
    assert os.access(site / "pkg/b0.bin", os.X_OK) and not os.access(site / "pkg/b1.bin", os.X_OK)


def test_a_single_file_over_the_limit_is_an_error_naming_it(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "huge", files={"huge/blob.bin": os.urandom(150 * KIB)})
    with pytest.raises(SystemExit, match=r"huge/blob\.bin compresses to 0\.15 MiB on its own, over the"):
        device_bundle.main([str(wheels), *_bundle_args(tmp_path / "out")])
    assert not list((tmp_path / "out").glob("bundle-part*"))


def test_cli_user_errors_exit_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit, match="does not exist"):
        device_bundle.main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        device_bundle.main([])
    assert "give a directory of wheels" in capsys.readouterr().err
    wheels = tmp_path / "w"
    wheels.mkdir()
    make_wheel(wheels, "numpy")
    with pytest.raises(SystemExit, match="every wheel .* is in --skip"):
        device_bundle.main([str(wheels), "--out", str(tmp_path / "o")])
